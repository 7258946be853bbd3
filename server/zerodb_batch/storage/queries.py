"""Named SQL: every `sql/*.sql` file split on `-- name: <name>` lines, loaded once."""

from __future__ import annotations

import re
from importlib import resources
from typing import LiteralString, cast

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
# The comment lines right under a name stay in the file: PostgreSQL need not parse them on every
# call, and a statement's first word names its span in traces (INSERT, UPDATE, WITH, ...).
_LEADING_COMMENT = re.compile(r"^(--\s*name:[^\n]*\n)(?:\s*--[^\n]*\n)+", re.MULTILINE)


def _parse(text: str) -> dict[str, LiteralString]:
    parts = _NAME.split(_LEADING_COMMENT.sub(r"\1", text))
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {
        name: cast(LiteralString, body.strip())
        for name, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def load() -> dict[str, LiteralString]:
    found: dict[str, LiteralString] = {}
    for entry in resources.files("zerodb_batch.storage").joinpath("sql").iterdir():
        if entry.name.endswith(".sql"):
            for name, body in _parse(entry.read_text()).items():
                if name in found:
                    raise RuntimeError(f"SQL query {name!r} is defined twice")
                found[name] = body
    return found


Q = load()
