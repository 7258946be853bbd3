"""The layers of DESIGN.md section 10 hold: the import contracts in pyproject.toml are kept.

api and interceptors use events, storage and domain; events use storage and domain; storage uses
domain; nothing imports upward. grpc only at the API border, psycopg only in storage/ and
embedded/, redis only in events/.
"""

from __future__ import annotations

import os
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    here = Path.cwd()
    os.chdir(ROOT)
    try:
        assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0
    finally:
        os.chdir(here)
