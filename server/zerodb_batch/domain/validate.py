"""The checks every batch applies: batch size, ids, text fields, JSON objects.

A `Checker` collects every violation of one item under a path prefix (`records[3]`), so that an
atomic batch reports all of them at once and a partial batch reports each item's own.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import struct_pb2

from zerodb_batch import limits
from zerodb_batch.errors import BatchTooLarge, InvalidArgument, Violation


def check_batch_size(field: str, count: int, maximum: int) -> None:
    """Refuse an empty batch or one over its limit before looking at any item."""
    if count > maximum:
        raise BatchTooLarge(field, count, maximum)
    if count == 0:
        raise InvalidArgument(
            f"{field} is empty; send at least one item",
            violations=[Violation(field, "at least one item is required", "EMPTY_BATCH")],
        )


def check_request_id(request_id: str) -> None:
    checker = Checker("")
    checker.text("request_id", request_id, limits.MAX_ID_CHARS)
    checker.raise_if_any("request_id is invalid")


class Checker:
    """Collects the violations of one item; `prefix` is the item's path, e.g. `records[3]`."""

    __slots__ = ("prefix", "violations")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.violations: list[Violation] = []

    def add(self, field: str, description: str, reason: str = "INVALID_FIELD") -> None:
        path = f"{self.prefix}.{field}" if self.prefix else field
        self.violations.append(Violation(path, description, reason))

    def text(self, field: str, value: str, max_chars: int, *, required: bool = False) -> None:
        """An identifier-like string: bounded length, no NUL (PostgreSQL text cannot hold it)."""
        if required and not value:
            self.add(field, "is required", "REQUIRED")
        elif len(value) > max_chars:
            self.add(field, f"at most {max_chars} characters, got {len(value)}", "TOO_LONG")
        elif "\x00" in value:
            self.add(field, "must not contain NUL characters", "INVALID_CHARACTER")

    def body(self, field: str, value: str, max_bytes: int) -> None:
        """A free text body measured in UTF-8 bytes."""
        if len(value) * 4 > max_bytes and len(value.encode()) > max_bytes:
            self.add(field, f"at most {max_bytes} bytes of UTF-8", "TOO_LONG")
        elif "\x00" in value:
            self.add(field, "must not contain NUL characters", "INVALID_CHARACTER")

    def unit_interval(self, field: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
        if not low <= value <= high:  # also false for NaN
            self.add(field, f"must be between {low} and {high}, got {value}", "OUT_OF_RANGE")

    def choice(self, field: str, value: str, allowed: Sequence[str]) -> None:
        if value not in allowed:
            self.add(field, f"must be one of {', '.join(allowed)}; got {value!r}", "INVALID_VALUE")

    def tags(self, field: str, tags: Sequence[str]) -> None:
        if len(tags) > limits.MAX_TAGS:
            self.add(field, f"at most {limits.MAX_TAGS} tags, got {len(tags)}", "TOO_MANY")
        for i, tag in enumerate(tags):
            self.text(f"{field}[{i}]", tag, limits.MAX_TAG_CHARS, required=True)

    def json_object(self, field: str, value: struct_pb2.Struct, max_bytes: int) -> str:
        """The Struct as JSON text ('{}' when empty), checked for size and NULs."""
        try:
            text = _dumps(value)
        except ValueError:
            self.add(field, "numbers must be finite (no NaN or Infinity)", "INVALID_VALUE")
            return "{}"
        if len(text) * 4 > max_bytes and len(text.encode()) > max_bytes:
            self.add(field, f"at most {max_bytes} bytes as JSON", "TOO_LONG")
        elif has_nul(text):
            self.add(field, "must not contain NUL characters", "INVALID_CHARACTER")
        return text

    def raise_if_any(self, message: str) -> None:
        if self.violations:
            raise InvalidArgument(message, violations=self.violations)


def _dumps(value: struct_pb2.Struct) -> str:
    """Compact JSON of a Struct, as json.dumps(ensure_ascii=False) writes it, except that a
    number with an integral value (below 2**53) is written as an integer (3.0 as 3, -0.0 as 0).

    Written straight from the message: building a dict first and encoding it costs twice as
    much, and this runs once per record of every write, so the common values are written
    inline. A non-empty string_value or a non-zero number_value can only be the value's kind
    (an unset member reads as empty), which spares the costlier WhichOneof for most values.
    Non-finite numbers raise ValueError.
    """
    fields = value.fields  # indexing by key: the map's items() view is a slow pure-Python walk
    parts = []
    for k in fields:
        v = fields[k]
        if text := v.string_value:
            parts.append(f"{_quote(k)}:{_quote(text)}")
        elif (n := v.number_value) and n.is_integer() and -_EXACT < n < _EXACT:
            parts.append(f"{_quote(k)}:{int(n)}")
        else:
            parts.append(f"{_quote(k)}:{_json(v)}")
    return "{" + ",".join(parts) + "}"


_EXACT = float(2**53)  # integral doubles below this in magnitude print as integers


def _json(v: struct_pb2.Value) -> str:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return _quote(v.string_value)
    if kind == "number_value":
        return _number(v.number_value)
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "struct_value":
        return _dumps(v.struct_value)
    if kind == "list_value":
        return "[" + ",".join([_json(x) for x in v.list_value.values]) + "]"
    return "null"


def _number(n: float) -> str:
    if not math.isfinite(n):
        raise ValueError("non-finite number")
    return repr(int(n)) if n.is_integer() and abs(n) < _EXACT else repr(n)


_quote: Callable[[str], str] = json.encoder.encode_basestring  # C-accelerated in CPython
_FAST_JSON = limits.MAX_METADATA_BYTES // 4


def metadata_json(value: struct_pb2.Struct) -> str | None:
    """JSON text of a Struct that is plainly within limits, else None (then use a Checker)."""
    try:
        text = _dumps(value)
    except ValueError:
        return None
    if len(text) > _FAST_JSON or ("\\u0000" in text and has_nul(text)):
        return None  # inline substring test first: this runs once per record of every write
    return text


# A NUL in JSON text is the escape `\u0000` after an even number of backslashes (each pair is an
# escaped backslash). After an odd number its backslash closes a pair, and `u0000` is plain text:
# {"path": "C:\\u0000x"} holds no NUL.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def has_nul(text: str) -> bool:
    """Whether JSON text written by `_dumps` holds a NUL in a key or string value."""
    return "\\u0000" in text and _NUL_ESCAPE.search(text) is not None


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain Python; much faster than json_format for the small objects we see."""
    return {k: _value(v) for k, v in value.fields.items()}


def _value(v: struct_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "number_value":
        n = v.number_value
        return int(n) if n.is_integer() and abs(n) < 2**53 else n
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return struct_to_dict(v.struct_value)
    if kind == "list_value":
        return [_value(x) for x in v.list_value.values]
    return None


def dict_to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if value:
        s.update(value)
    return s


def check_ids(field: str, ids: Sequence[str]) -> None:
    """Ids to look up: each present, bounded and free of NUL; every bad one reported."""
    checker = Checker("")
    for i, item_id in enumerate(ids):
        checker.text(f"{field}[{i}]", item_id, limits.MAX_ID_CHARS, required=True)
    checker.raise_if_any(f"{len(checker.violations)} of {len(ids)} {field} are invalid")
