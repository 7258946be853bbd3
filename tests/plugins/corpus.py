"""Hypothesis strategies for the bad-input corpus: request bytes for any RPC, made from its
request type's descriptor.

A message is first built field by field (random values, biased to the edges that have bitten
servers: extremes, NaN and infinities, deep and wide Structs, times outside years 1..9999, huge
ids, forged page tokens and load ids), serialized, and then maybe damaged at the byte level
(unknown fields, a known field with the wrong wire type, invalid UTF-8 in a string field, a
truncation, or no protobuf at all).
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st

from zerodb_batch.domain import wire

F = FieldDescriptor
_WELL_KNOWN_JSON = ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue")
_MAX_DEPTH = 3  # nested messages below this depth stay empty: the corpus is about edges, not size
_INT_EDGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
# Words the API gives meaning to, so that some requests get past validation and reach SQL.
_WORDS = (
    "", "default", "episodic", "semantic", "working", "positive", "negative", "mixed",
    "agent.task.*", "agent.task.completed", "$gt", "$regex", "$in", "t1", "row_id", "0-0",
    "1-1", "$", "*", "a.b", "../..", "'; DROP TABLE memories; --", "\x00", "\u202e", "🚀",
)  # fmt: skip


# Short words that pass most rules (names, tags, contents, ids).
_PLAIN = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)


def json_values(max_leaves: int = 6) -> st.SearchStrategy[Any]:
    """JSON values as a Struct holds them: small random trees, plus very deep and very wide."""
    leaf = st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        st.sampled_from(_WORDS),
    )
    tree = st.recursive(
        leaf,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(max_size=8) | st.sampled_from(_WORDS), inner, max_size=3)
        ),
        max_leaves=max_leaves,
    )
    # Plain trees four times in seven: values that pass validation reach SQL.
    return st.one_of(
        tree,
        tree,
        tree,
        tree,
        st.integers(0, 45).map(_deep),  # the decoder stops near 30 levels, our rules at 20
        st.integers(0, 3000).map(lambda n: {f"k{i}": i for i in range(n)}),  # wide
        st.integers(0, 70_000).map(lambda n: "x" * n),  # past the 64 KiB field limits
    )


def _deep(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return {"k": value}


def text_for(field: FieldDescriptor, project_id: str) -> st.SearchStrategy[str]:
    """A string field: the project's id where one is named (else the call stops at the key's
    project), forged tokens and load ids, huge ids, and random text."""
    name = field.name
    if name == "project_id":
        return st.sampled_from((project_id,) * 9 + ("other-project",))
    shaped = [_PLAIN, _PLAIN, st.text(max_size=40), st.sampled_from(_WORDS)]
    if name.endswith("page_token"):
        shaped.append(st.binary(max_size=120).map(lambda b: base64.urlsafe_b64encode(b).decode()))
    if name.endswith("id") or name.endswith("ids"):
        shaped.append(st.integers(0, 100_000).map(lambda n: "9" * n))  # huge ids
        shaped.append(st.uuids().map(str))
    return st.one_of(*shaped)


def scalar(field: FieldDescriptor, project_id: str) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == F.TYPE_STRING:
        return text_for(field, project_id)
    if kind == F.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        width = 32 if kind == F.TYPE_FLOAT else 64
        anything = st.floats(allow_nan=True, allow_infinity=True, width=width)
        return st.floats(-1, 1, width=width) | anything  # half in the ranges scores take
    if kind == F.TYPE_ENUM:
        defined = [v.number for v in field.enum_type.values]
        return (
            st.sampled_from(defined) | st.sampled_from(defined) | st.integers(-(2**31), 2**31 - 1)
        )
    low, high = _INT_EDGES[kind]
    edges = st.sampled_from((low, high, 0, -1 if low else 1)) | st.integers(low, high)
    return st.integers(0, 20) | edges


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, project_id: str, depth: int = 0) -> Any:
    """A message of `descriptor`'s type with random fields set."""
    message = message_factory.GetMessageClass(descriptor)()
    if descriptor.full_name in _WELL_KNOWN_JSON:
        _fill_json(message, draw(json_values()))
        return message
    if descriptor.full_name == "google.protobuf.Timestamp":
        message.seconds = draw(scalar(descriptor.fields_by_name["seconds"], project_id))
        message.nanos = draw(scalar(descriptor.fields_by_name["nanos"], project_id))
        return message
    for field in descriptor.fields:
        if field.name != "project_id" and not draw(st.booleans()):
            continue
        _set(draw, message, field, project_id, depth)
    return message


def _fill_json(message: Any, value: Any) -> None:
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Struct":
        message.update(value if isinstance(value, dict) else {"v": value})
    elif name == "google.protobuf.ListValue":
        message.extend(value if isinstance(value, list) else [value])
    else:
        message.list_value.extend([value])


def _set(
    draw: st.DrawFn, message: Any, field: FieldDescriptor, project_id: str, depth: int
) -> None:
    if field.type == F.TYPE_MESSAGE:
        if depth >= _MAX_DEPTH:
            return
        item = messages(field.message_type, project_id, depth + 1)
        if field.message_type.GetOptions().map_entry:
            key, value = field.message_type.fields_by_name["key"], field.message_type.fields
            entries = draw(st.lists(item, max_size=3))
            target = getattr(message, field.name)
            for entry in entries:
                _put_map_entry(target, entry, key, value[1])
            return
        if field.is_repeated:
            target = getattr(message, field.name)
            for one in draw(_counts(item)):
                # add + CopyFrom: extend() re-parses, which fails past the decoder's depth.
                target.add().CopyFrom(one)
        else:
            getattr(message, field.name).CopyFrom(draw(item))
        return
    value = scalar(field, project_id)
    if field.is_repeated:
        getattr(message, field.name).extend(draw(_counts(value)))
    else:
        setattr(message, field.name, draw(value))


def _put_map_entry(target: Any, entry: Any, key: FieldDescriptor, value: FieldDescriptor) -> None:
    if value.type == F.TYPE_MESSAGE:
        target[entry.key].CopyFrom(entry.value)
    else:
        target[entry.key] = entry.value


def _counts(item: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    """Mostly a few items; sometimes past every batch limit (1000 is the largest)."""
    few = st.lists(item, max_size=4)
    return few | few | few | st.builds(_copies, item, st.sampled_from((501, 1001)))


def _copies(one: Any, n: int) -> list[Any]:
    """`n` copies of `one`, or of an empty one if it is large: a list past a batch limit needs
    no large items, and 1001 copies of a 70 KB Struct would only cost memory."""
    if hasattr(one, "ByteSize") and one.ByteSize() > 2048:
        one = type(one)()
    elif isinstance(one, str | bytes) and len(one) > 2048:
        one = one[:16]
    return [one] * n


# --- byte-level damage -----------------------------------------------------------------------


def _length_delimited(number: int, payload: bytes) -> bytes:
    return wire.tag(number, wire.LENGTH_DELIMITED) + wire.varint(len(payload)) + payload


def _string_paths(descriptor: Descriptor, depth: int = 0) -> list[list[int]]:
    """Field-number paths from the top message down to each string field (3 levels at most)."""
    paths: list[list[int]] = []
    for field in descriptor.fields:
        if field.type == F.TYPE_STRING:
            paths.append([field.number])
        elif field.type == F.TYPE_MESSAGE and depth < 2:
            inner = _string_paths(field.message_type, depth + 1)
            paths.extend([field.number, *p] for p in inner)
    return paths


def invalid_utf8_at(path: list[int]) -> bytes:
    """Bytes that set the string at `path` (through nested messages) to invalid UTF-8."""
    payload = b"\xff\xfe\xc3"
    for number in reversed(path):
        payload = _length_delimited(number, payload)
    return payload


_DAMAGE = (
    "as-is", "as-is", "unknown-field", "wrong-wire-type", "invalid-utf8", "truncated", "garbage",
)  # fmt: skip


@st.composite
def damaged(draw: st.DrawFn, descriptor: Descriptor, good: bytes) -> tuple[str, bytes]:
    """(what was done, the bytes): `good` itself, or `good` damaged in one of several ways."""
    numbers = [f.number for f in descriptor.fields]
    how = draw(st.sampled_from(_DAMAGE))
    if how == "unknown-field":
        number = draw(st.integers(len(numbers) + 1, 2**29 - 1))
        extra = _length_delimited(number, draw(st.binary(max_size=16)))
        return how, good + extra if draw(st.booleans()) else wire.true_field(number) + good
    if how == "wrong-wire-type":
        field = draw(st.sampled_from(list(descriptor.fields)))
        wrong = F.TYPE_STRING, F.TYPE_MESSAGE, F.TYPE_BYTES
        extra = (
            wire.true_field(field.number)  # a varint where a length-delimited field is
            if field.type in wrong
            else wire.tag(field.number, wire.LENGTH_DELIMITED) + b"\x02ab"
        )
        return how, good + extra
    if how == "invalid-utf8":
        paths = _string_paths(descriptor)
        return how, good + invalid_utf8_at(draw(st.sampled_from(paths)))
    if how == "truncated" and len(good) > 1:
        return how, good[: draw(st.integers(1, len(good) - 1))]
    if how == "garbage":
        return how, draw(st.binary(min_size=1, max_size=200))
    return "as-is", good
