"""Free-form JSON objects (`google.protobuf.Struct`) as the JSON text PostgreSQL stores.

Written straight from the message: building a dict first and encoding it costs twice as much, and
this runs once per record of every write, so the common values are written inline. The text is
what `json.dumps(ensure_ascii=False, separators=(",", ":"))` writes, except that a number with an
integral value (below 2**53) is written as an integer (3.0 as 3, -0.0 as 0).

Two things a Struct can hold are refused here: non-finite numbers (JSON has none) and nesting
deeper than `limits.MAX_JSON_DEPTH` objects or arrays (the protobuf decoder itself gives up a
little past 30 levels, so a documented limit below it is what callers can rely on).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from google.protobuf import struct_pb2

from zerodb_batch import limits


class NotJson(ValueError):
    """The Struct cannot be stored as JSON; the message says why, for a field violation."""


_EXACT = float(2**53)  # integral doubles below this in magnitude print as integers
_MAX_DEPTH = limits.MAX_JSON_DEPTH
_quote: Callable[[str], str] = json.encoder.encode_basestring  # C-accelerated in CPython


def dumps(value: struct_pb2.Struct, depth: int = 1) -> str:
    """Compact JSON of a Struct; NotJson for a non-finite number or too deep a nesting.

    A non-empty string_value or a non-zero number_value can only be the value's kind (an unset
    member reads as empty), which spares the costlier WhichOneof for most values.
    """
    if depth > _MAX_DEPTH:
        raise NotJson(f"nested deeper than {_MAX_DEPTH} levels of objects and arrays")
    fields = value.fields  # indexing by key: the map's items() view is a slow pure-Python walk
    parts = []
    for k in fields:
        v = fields[k]
        if text := v.string_value:
            parts.append(f"{_quote(k)}:{_quote(text)}")
        elif (n := v.number_value) and n.is_integer() and -_EXACT < n < _EXACT:
            parts.append(f"{_quote(k)}:{int(n)}")
        else:
            parts.append(f"{_quote(k)}:{_json(v, depth)}")
    return "{" + ",".join(parts) + "}"


def _json(v: struct_pb2.Value, depth: int) -> str:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return _quote(v.string_value)
    if kind == "number_value":
        return _number(v.number_value)
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "struct_value":
        return dumps(v.struct_value, depth + 1)
    if kind == "list_value":
        if depth + 1 > _MAX_DEPTH:
            raise NotJson(f"nested deeper than {_MAX_DEPTH} levels of objects and arrays")
        return "[" + ",".join([_json(x, depth + 1) for x in v.list_value.values]) + "]"
    return "null"


def _number(n: float) -> str:
    if not math.isfinite(n):
        raise NotJson("numbers must be finite (no NaN or Infinity)")
    return repr(int(n)) if n.is_integer() and abs(n) < _EXACT else repr(n)


def fast_text(value: struct_pb2.Struct, max_chars: int) -> str | None:
    """JSON text of a Struct that is plainly valid and within `max_chars` characters (a quarter
    of its byte limit), else None: then the full check decides, and explains."""
    try:
        text = dumps(value)
    except NotJson:
        return None
    if len(text) > max_chars or ("\\u0000" in text and has_nul(text)):
        return None  # inline substring test first: this runs once per record of every write
    return text


# A NUL in JSON text is the escape `\u0000` after an even number of backslashes (each pair is an
# escaped backslash). After an odd number its backslash closes a pair, and `u0000` is plain text:
# {"path": "C:\\u0000x"} holds no NUL.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def has_nul(text: str) -> bool:
    """Whether JSON text written by `dumps` holds a NUL in a key or string value."""
    return "\\u0000" in text and _NUL_ESCAPE.search(text) is not None


def to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain Python, an integral number as an int (as JSON text reads back)."""
    return {k: _plain(v) for k, v in value.fields.items()}


def _plain(v: struct_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "number_value":
        n = v.number_value
        return int(n) if n.is_integer() and abs(n) < _EXACT else n
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return to_dict(v.struct_value)
    if kind == "list_value":
        return [_plain(x) for x in v.list_value.values]
    return None


def string_member(value: struct_pb2.Struct, key: str) -> str:
    """The string at `key` of a Struct; empty when there is none or it is not a string."""
    fields = value.fields  # a lookup of a missing key would add it: test first
    return fields[key].string_value if key in fields else ""


def to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    """A JSON object read from PostgreSQL as a Struct for a response."""
    s = struct_pb2.Struct()
    if value:
        s.update(value)
    return s
