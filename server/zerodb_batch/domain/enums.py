"""Enum fields of requests hold only the values their enum defines.

Proto3 enums are open: a client can send any number (`tag_match: 99`), and the decoded message
keeps it. We treat every enum of the API as closed, checked once per request from the message's
descriptor, so no RPC can forget to and an unknown value never reaches a query as "unspecified".
Enums inside repeated items are left to the entity's rules (walking every item of a 500-record
batch for enums it does not have would cost every write).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from zerodb_batch.domain.validate import Checker

_Path = tuple[FieldDescriptor, ...]


def check_enums(request: Message) -> None:
    """INVALID_ARGUMENT naming every enum field of `request` that holds an undefined number."""
    checker = Checker("")
    for path, enum in _enum_paths(request.DESCRIPTOR):
        value = _value(request, path)
        if value is not None and value not in enum.values_by_number:
            names = ", ".join(v.name for v in enum.values)
            checker.add(
                ".".join(f.name for f in path), f"{value} is not one of {names}", "INVALID_VALUE"
            )
    checker.raise_if_any("the request holds an undefined enum value")


def _value(message: Message, path: _Path) -> int | None:
    for field in path[:-1]:
        if not message.HasField(field.name):
            return None
        message = getattr(message, field.name)
    value: int = getattr(message, path[-1].name)
    return value


@cache
def _enum_paths(descriptor: Descriptor) -> tuple[tuple[_Path, EnumDescriptor], ...]:
    return tuple(_walk(descriptor, (), frozenset()))


def _walk(
    descriptor: Descriptor, prefix: _Path, seen: frozenset[str]
) -> Iterator[tuple[_Path, EnumDescriptor]]:
    for field in descriptor.fields:
        if field.is_repeated:
            continue
        if field.enum_type is not None:
            yield (*prefix, field), field.enum_type
        elif field.message_type is not None and _ours(field.message_type, seen):
            yield from _walk(field.message_type, (*prefix, field), seen | {descriptor.full_name})


def _ours(message: Descriptor, seen: frozenset[str]) -> bool:
    """A message of this API not yet on the path (well-known types hold no enums of ours)."""
    return message.full_name not in seen and not message.full_name.startswith("google.protobuf.")
