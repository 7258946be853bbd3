"""The door's JSON <-> protobuf conversion against json_format, on every message of the API.

Messages are filled at random (seeded), printed by both, and the printed JSON, with its values
mutated into every JSON type at random places, is parsed by both: the door must print what
json_format prints, accept exactly what it accepts, and build the same message.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from zerodb.v1 import common_pb2, event_pb2, load_pb2, memory_pb2, rlhf_pb2, table_pb2, vector_pb2
from zerodb_batch.http.jsonpb import Decoder, Encoder, UnknownField

F = FieldDescriptor
MODULES = (common_pb2, event_pb2, load_pb2, memory_pb2, rlhf_pb2, table_pb2, vector_pb2)
ODD_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 2**31, 2**63, 1.0, 0.5, -2.5, 1e39, "", "x", "7", "0.5", "true",
    "NaN", "2024-01-02T03:04:05Z", "15s", "a,b", [], [1], ["x"], [None], {}, {"a": 1},
]  # fmt: skip


def all_messages() -> Iterator[Descriptor]:
    for module in MODULES:
        yield from module.DESCRIPTOR.message_types_by_name.values()


def printed(message: Message) -> Any:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class Filler:
    """Random values for every field kind, edge cases included."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def message(self, descriptor: Descriptor, depth: int = 0) -> Message:
        message = message_factory.GetMessageClass(descriptor)()
        for field in descriptor.fields:
            if self.rng.random() < 0.3 or (depth > 2 and field.message_type is not None):
                continue
            self.set(message, field, depth)
        return message

    def set(self, message: Message, field: FieldDescriptor, depth: int) -> None:
        if field.message_type is not None:
            count = self.rng.randint(0, 3) if field.is_repeated else 1
            target = getattr(message, field.name)
            for _ in range(count):
                sub = target.add() if field.is_repeated else target
                self.fill(sub, depth + 1)
            return
        values = [self.scalar(field) for _ in range(self.rng.randint(0, 3))]
        if field.is_repeated:
            getattr(message, field.name).extend(values)
        else:
            setattr(message, field.name, self.scalar(field))

    def fill(self, message: Message, depth: int) -> None:
        name = message.DESCRIPTOR.full_name
        if name == "google.protobuf.Struct":
            message.update(self.json(depth))  # type: ignore[attr-defined]
        elif name == "google.protobuf.Timestamp":
            message.FromSeconds(self.rng.randint(0, 2**33))  # type: ignore[attr-defined]
        elif name == "google.protobuf.Duration":
            message.FromNanoseconds(self.rng.randint(0, 10**12))  # type: ignore[attr-defined]
        elif name == "google.protobuf.FieldMask":
            message.paths.extend(["content", "session_id"][: self.rng.randint(0, 2)])  # type: ignore[attr-defined]
        elif name == "google.rpc.Status":
            message.code = 3  # type: ignore[attr-defined]
            message.details.add().Pack(error_details_pb2.ErrorInfo(reason="R", domain="d"))  # type: ignore[attr-defined]
        else:
            message.CopyFrom(self.message(message.DESCRIPTOR, depth))  # type: ignore[arg-type]

    def json(self, depth: int) -> dict[str, Any]:
        pick = [None, True, 3, 2.5, "s", [1, "a", None]]
        out: dict[str, Any] = {
            f"k{i}": self.rng.choice(pick) for i in range(self.rng.randint(0, 3))
        }
        if depth < 3 and self.rng.random() < 0.5:
            out["nested"] = self.json(depth + 1)
        return out

    def scalar(self, field: FieldDescriptor) -> Any:
        t = field.type
        if t == F.TYPE_STRING:
            return self.rng.choice(["", "a", 'é\n"x"', "0.5"])
        if t == F.TYPE_BYTES:
            return bytes(self.rng.randint(0, 255) for _ in range(3))
        if t == F.TYPE_BOOL:
            return self.rng.random() < 0.5
        if t == F.TYPE_ENUM:
            numbers = [v.number for v in field.enum_type.values] + [99]  # type: ignore[union-attr]
            return self.rng.choice(numbers)
        if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
            return self.rng.choice([0.0, -0.0, 0.1, 1e10, -3.25, math.nan, math.inf, 0.021])
        if t in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
            return self.rng.choice([0, -1, 2**62, 7])
        if t in (F.TYPE_UINT64, F.TYPE_FIXED64, F.TYPE_UINT32, F.TYPE_FIXED32):
            return self.rng.choice([0, 1, 2**31])
        return self.rng.choice([0, -5, 2**31 - 1])


def mutated(data: Any, rng: random.Random) -> Any:
    """`data` with one value somewhere replaced by an odd one, or an odd key added."""
    out = copy.deepcopy(data)
    target, key = _spot(out, rng)
    if target is None:
        return out
    if rng.random() < 0.15 and isinstance(target, dict):
        target[rng.choice(["colour", "projectId", "memoryType", "[x]"])] = 1
    else:
        target[key] = rng.choice(ODD_VALUES)
    return out


def _spot(data: Any, rng: random.Random) -> tuple[Any, Any]:
    spots: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in list(items):
            spots.append((node, k))
            if isinstance(v, dict | list):
                walk(v)

    if isinstance(data, dict | list):
        walk(data)
    return rng.choice(spots) if spots else (None, None)


def parse_both(descriptor: Descriptor, data: Any) -> tuple[Any, Any]:
    def ours() -> Any:
        try:
            return Decoder(descriptor)(data)
        except (json_format.ParseError, UnknownField):
            return "refused"

    def theirs() -> Any:
        try:
            return json_format.ParseDict(data, message_factory.GetMessageClass(descriptor)())
        except Exception:  # json_format lets a few odd inputs through as other errors
            return "refused"

    return ours(), theirs()


@pytest.mark.parametrize("descriptor", list(all_messages()), ids=lambda d: d.name)
def test_printing_matches_json_format(descriptor: Descriptor) -> None:
    filler, encode = Filler(hash(descriptor.name) % 1000), Encoder(descriptor)
    for _ in range(40):
        message = filler.message(descriptor)
        try:
            expected = printed(message)
        except ValueError:  # json_format refuses (e.g. an infinite Struct number)
            continue
        assert encode(message) == expected


@pytest.mark.parametrize("descriptor", list(all_messages()), ids=lambda d: d.name)
def test_parsing_matches_json_format(descriptor: Descriptor) -> None:
    filler, rng = Filler(hash(descriptor.name) % 997), random.Random(descriptor.name)
    for _ in range(60):
        data = printed(filler.message(descriptor))
        for candidate in (data, _plain(data), mutated(data, rng), mutated(_plain(data), rng)):
            ours, theirs = parse_both(descriptor, candidate)
            assert ours == theirs, candidate


def _plain(data: Any) -> Any:
    """The printed JSON with numeric strings as numbers (how most clients send int64s)."""
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    if isinstance(data, str) and data.lstrip("-").isdigit():
        return int(data)
    return data


def test_unknown_field_names_its_path() -> None:
    decode = Decoder(memory_pb2.BatchUpsertMemoriesRequest.DESCRIPTOR)
    with pytest.raises(UnknownField) as caught:
        decode({"records": [{"content": "a"}, {"colour": "red"}]})
    assert caught.value.path == "records[1].colour"
