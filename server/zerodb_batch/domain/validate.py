"""The checks every batch applies: batch size, ids, text fields, JSON objects.

A `Checker` collects every violation of one item under a path prefix (`records[3]`), so that an
atomic batch reports all of them at once and a partial batch reports each item's own.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import struct_pb2

from zerodb_batch import limits
from zerodb_batch.domain import json_text, struct_json
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
        # An empty field is the item itself (a table row is its own JSON object).
        path = f"{self.prefix}.{field}" if self.prefix and field else self.prefix or field
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
        """The Struct as JSON text ('{}' when empty), checked for size, depth and NULs."""
        try:
            text = struct_json.dumps(value)
        except struct_json.NotJson as e:
            self.add(field, str(e), "INVALID_VALUE")
            return "{}"
        if len(text) * 4 > max_bytes and len(text.encode()) > max_bytes:
            self.add(field, f"at most {max_bytes} bytes as JSON", "TOO_LONG")
        elif struct_json.has_nul(text):
            self.add(field, "must not contain NUL characters", "INVALID_CHARACTER")
        return text

    def json_text(self, field: str, text: str, max_bytes: int) -> str:
        """An object sent as JSON text ('{}' when empty), held to json_object's limits."""
        if not text:
            return "{}"
        if len(text) * 4 > max_bytes and len(text.encode()) > max_bytes:
            self.add(field, f"at most {max_bytes} bytes of JSON text", "TOO_LONG")
        elif (found := json_text.problem(text)) is not None:
            self.add(field, *found)
        return text

    def raise_if_any(self, message: str) -> None:
        if self.violations:
            raise InvalidArgument(message, violations=self.violations)


def check_ids(field: str, ids: Sequence[str]) -> None:
    """Ids to look up: each present, bounded and free of NUL; every bad one reported."""
    # The usual batch in a few C-speed passes; the loop below only to name what is wrong.
    short = max(map(len, ids), default=0) <= limits.MAX_ID_CHARS
    if short and "" not in ids and "\x00" not in "".join(ids):
        return
    checker = Checker("")
    for i, item_id in enumerate(ids):
        checker.text(f"{field}[{i}]", item_id, limits.MAX_ID_CHARS, required=True)
    checker.raise_if_any(f"{len(checker.violations)} of {len(ids)} {field} are invalid")
