"""The layers of DESIGN.md section 10 hold: the import contracts in pyproject.toml are kept.

api and interceptors use events, storage and domain; events use storage and domain; storage uses
domain; nothing imports upward. grpc only at the API border, psycopg only in storage/ and
embedded/, redis only in events/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    # In a process of its own: import-linter configures logging with dictConfig, which disables
    # every logger that exists, and later tests of this session read the server's log lines.
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
