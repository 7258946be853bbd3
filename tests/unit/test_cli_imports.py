"""`zerodb-batch load` and `export` are clients: the command starts without the server's modules."""

from __future__ import annotations

import subprocess
import sys

SERVER_MODULES = ("zerodb_batch.app", "zerodb_batch.storage", "zerodb_batch.events", "psycopg")


def test_the_cli_imports_the_server_only_for_its_commands() -> None:
    probe = (
        "import sys; from zerodb_batch import cli; "
        "cli._parser().parse_args(['load', 'memories', 'f.jsonl', '--project', 'p']); "
        f"print(sorted(m for m in {SERVER_MODULES!r} if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert found.strip() == "[]"
