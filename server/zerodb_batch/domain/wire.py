"""Protobuf's wire format, for messages put together from serialized parts (the loader's chunks,
the HTTP door's last line): bytes appended to a serialized message add their fields to it, and a
scalar field read twice takes its last value."""

from __future__ import annotations

VARINT, LENGTH_DELIMITED = 0, 2  # wire types


def varint(n: int) -> bytes:
    """A non-negative integer as a base-128 varint."""
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def true_field(number: int) -> bytes:
    """A bool field set to true."""
    return tag(number, VARINT) + b"\x01"
