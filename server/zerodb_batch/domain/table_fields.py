"""Field paths into a row's JSON (`address.city`), the JSON values that filters and updates carry,
and projections of rows onto a list of paths.

A path is 1-16 parts of ASCII letters, digits and `_`, joined by `.`, at most 256 characters.
The grammar keeps paths plain data: they reach SQL only as parameters (`row_data #> %s`), and a
path that could be mistaken for anything else is refused before that.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from zerodb_batch import limits
from zerodb_batch.domain.validate import Checker

Json: TypeAlias = Any  # None | bool | int | float | str | list[Json] | dict[str, Json]
Path: TypeAlias = tuple[str, ...]

_PART = re.compile(r"[A-Za-z0-9_]+")
PATH_RULE = "letters, digits and _ (ASCII), with . between the parts of a nested field"


def join(at: str, key: str) -> str:
    """The violation path of `key` under `at` (either may be empty)."""
    return f"{at}.{key}" if at else key


def read_path(c: Checker, at: str, text: str) -> Path | None:
    """A dotted field path as its parts, or None after adding a violation at `at`."""
    if len(text) > limits.MAX_FIELD_PATH_CHARS:
        c.add(at, f"a field path has at most {limits.MAX_FIELD_PATH_CHARS} characters", "TOO_LONG")
        return None
    parts = tuple(text.split("."))
    if not all(_PART.fullmatch(part) for part in parts):
        c.add(at, f"is not a field path: use {PATH_RULE}", "INVALID_FIELD_PATH")
        return None
    if len(parts) > limits.MAX_FIELD_PATH_PARTS:
        c.add(at, f"a field path has at most {limits.MAX_FIELD_PATH_PARTS} parts", "TOO_DEEP")
        return None
    return parts


def read_paths(c: Checker, at: str, texts: Iterable[str], maximum: int) -> tuple[Path, ...]:
    """A list of distinct field paths (`at[i]` in violations), at most `maximum`."""
    texts = list(texts)
    if len(texts) > maximum:
        c.add(at, f"at most {maximum} fields, got {len(texts)}", "TOO_MANY")
        return ()
    paths: list[Path] = []
    for i, text in enumerate(texts):
        path = read_path(c, f"{at}[{i}]", text)
        if path is not None and path in paths:
            c.add(f"{at}[{i}]", f"names {text!r} twice", "DUPLICATE_FIELD")
        elif path is not None:
            paths.append(path)
    return tuple(paths)


def check_json(c: Checker, at: str, value: Json) -> bool:
    """Whether `value` can be stored and compared: finite numbers, no NUL in strings or keys
    (PostgreSQL's jsonb holds neither NaN nor NUL). Adds one violation at `at` otherwise."""
    problem = _json_problem(value)
    if problem is not None:
        c.add(at, problem, "INVALID_VALUE")
    return problem is None


def _json_problem(value: Json) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite (no NaN or Infinity)"
    if isinstance(value, str) and "\x00" in value:
        return "strings must not contain NUL characters"
    if isinstance(value, list):
        return next(filter(None, map(_json_problem, value)), None)
    if isinstance(value, dict):
        if any("\x00" in key for key in value):
            return "keys must not contain NUL characters"
        return next(filter(None, map(_json_problem, value.values())), None)
    return None


def is_number(value: Json) -> bool:
    """A JSON number (bool is a subclass of int in Python, but never a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def project(row: Mapping[str, Json], paths: Iterable[Path]) -> dict[str, Json]:
    """The parts of `row` that `paths` name, nested as in the row; absent paths are left out.

    Paths walk objects only. A path under another one listed (`a.b` with `a`) adds nothing.
    """
    out: dict[str, Json] = {}
    taken: list[Path] = []
    for path in sorted(set(paths), key=len):
        if any(path[: len(t)] == t for t in taken):
            continue
        value = _walk_objects(row, path)
        if value is _ABSENT:
            continue
        taken.append(path)
        node = out
        for part in path[:-1]:  # never a value of the row: no taken path is a prefix of this one
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


_ABSENT = object()


def _walk_objects(row: Mapping[str, Json], path: Path) -> Json:
    node: Json = row
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node
