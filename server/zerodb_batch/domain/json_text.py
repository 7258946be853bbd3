"""Free-form JSON objects sent as JSON text (`metadata_json`): checked once, stored as sent.

A bulk loader that holds a record's metadata as JSON already would otherwise build a Struct per
record for the server to turn back into text. The text is parsed once, by orjson (in C, about
the cost of reading a Struct's fields), which refuses what JSON and PostgreSQL's `jsonb` refuse:
malformed text, NaN and Infinity, numbers too large for a double, lone surrogates. What it
accepts that `jsonb` would not, a NUL escape, and the limits a Struct has (a JSON object at the
top, `limits.MAX_JSON_DEPTH` levels) are checked here. The text is stored as sent: `jsonb`
parses it once more in PostgreSQL in any case, and a re-encoding would only cost time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from zerodb_batch import limits
from zerodb_batch.domain.struct_json import has_nul

_MAX_DEPTH = limits.MAX_JSON_DEPTH


def problem(text: str) -> tuple[str, str] | None:
    """Why `text` is not a storable JSON object, as (description, reason); None if it is."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        return f"not valid JSON: {e}", "INVALID_JSON"
    if not isinstance(value, dict):
        return f"must be a JSON object, got {_kind(value)}", "INVALID_VALUE"
    if _too_deep(text, value):
        return f"nested deeper than {_MAX_DEPTH} levels of objects and arrays", "INVALID_VALUE"
    if has_nul(text):
        return "must not contain NUL characters", "INVALID_CHARACTER"
    return None


def fast_text(text: str, max_chars: int) -> str | None:
    """`text` when it is plainly a storable object within `max_chars` characters (a quarter of
    its byte limit), else None: then the full check decides, and explains."""
    if len(text) > max_chars or text[:1] != "{":  # an object starts with "{" (after no space)
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or _too_deep(text, value) or has_nul(text):
        return None
    return text


def _too_deep(text: str, value: Any) -> bool:
    # Every level opens a bracket, so text with few brackets (in strings or not) is shallow:
    # two C-speed counts spare the walk for almost every record.
    if text.count("{") + text.count("[") <= _MAX_DEPTH:
        return False
    return _deeper_than(value, _MAX_DEPTH)


def _deeper_than(value: Any, levels: int) -> bool:
    """Whether `value` nests more than `levels` objects and arrays; stops looking below that."""
    children: Iterable[Any]
    if isinstance(value, dict):
        children = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    return levels == 0 or any(_deeper_than(child, levels - 1) for child in children)


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
