"""JSON <-> protobuf for the door, with json_format's semantics at a fraction of its cost.

json_format walks every field in Python: parsing the seed's 500-record upsert takes it ~30 ms,
about three times the call's SQL. Most bodies are *plain*: known snake_case keys whose values
already have the Python type the message constructor takes, and for those the constructor (C)
builds the same message in ~0.5 ms. Anything else (camelCase keys, numbers sent as strings,
timestamps, field masks, nulls, ...) goes to json_format itself, so what is accepted, and how, is
exactly json_format's. Output likewise: a per-type emitter for the field kinds whose JSON form is
trivial, json_format's own conversions for the rest. tests/unit/test_http_jsonpb.py holds both
directions to json_format on every message of the API.
"""

from __future__ import annotations

import base64
import keyword
import math
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.internal import type_checkers
from google.protobuf.message import DecodeError, Message

F = FieldDescriptor
_FLOAT_MAX = float.fromhex("0x1.fffffep+127")
# Messages whose JSON form is a string made by their own ToJsonString().
_STRING_FORMS = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
)
_STRUCT = "google.protobuf.Struct"

# Field kinds, for input and output alike.
STR, BOOL, INT, INT64, NUM, FLOAT, ENUM, BYTES, MSG, STRUCT, STRING_FORM, OTHER = range(12)
_INTS = {F.CPPTYPE_INT32, F.CPPTYPE_UINT32}
_INT64S = {F.CPPTYPE_INT64, F.CPPTYPE_UINT64}
# Python types the constructor takes exactly as json_format reads them (bool is not an int here).
_PLAIN_TYPES: dict[int, frozenset[type]] = {
    STR: frozenset({str}),
    BOOL: frozenset({bool}),
    INT: frozenset({int}),
    INT64: frozenset({int}),
    NUM: frozenset({int, float}),
    FLOAT: frozenset({int, float}),
    ENUM: frozenset({str, int}),
}


class UnknownField(ValueError):
    """A key that names no field of its message; `path` grows as the error travels up."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.path = key

    def under(self, parent: str) -> UnknownField:
        self.path = f"{parent}.{self.path}" if not self.path.startswith("[") else parent + self.path
        return self


def kind_of(field: FieldDescriptor) -> int:
    """The field's kind (one of the constants above)."""
    cpp = field.cpp_type
    if cpp == F.CPPTYPE_MESSAGE:
        name = message_of(field).full_name
        if is_map(field):
            return OTHER
        if name == _STRUCT:
            return STRUCT
        if name in _STRING_FORMS:
            return STRING_FORM
        return OTHER if name.startswith("google.") else MSG
    if cpp == F.CPPTYPE_STRING:
        return BYTES if field.type == F.TYPE_BYTES else STR
    if cpp in _INTS:
        return INT
    if cpp in _INT64S:
        return INT64
    if cpp == F.CPPTYPE_DOUBLE:
        return NUM
    if cpp == F.CPPTYPE_FLOAT:
        return FLOAT
    if cpp == F.CPPTYPE_ENUM:
        return ENUM
    return BOOL


def is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def message_of(field: FieldDescriptor) -> Descriptor:
    """The message type of a message field."""
    assert field.message_type is not None, field.full_name
    return field.message_type


def is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and bool(field.message_type.GetOptions().map_entry)


# ---- input -------------------------------------------------------------------------------


_Check = Callable[[Any], bool]


class _Shape:
    """What a plain JSON object for one message type looks like.

    Only fields whose values the constructor might take differently from json_format are
    checked: it refuses (so json_format decides) a wrong type for a string, Struct or message
    field by itself, but it would take `1` for a bool, `true` for an int, or iterate a string
    given for a repeated field."""

    def __init__(self, descriptor: Descriptor, shapes: dict[str, _Shape]) -> None:
        shapes[descriptor.full_name] = self
        self.names = frozenset(f.name for f in descriptor.fields)
        self.open_ended = any(kind_of(f) in (STRUCT, OTHER) for f in descriptor.fields)
        # json_format also takes the lowerCamelCase names: not plain, but not unknown either.
        self.aliases = frozenset(f.json_name for f in descriptor.fields) - self.names
        self.checks: list[tuple[str, _Check]] = []
        for f in descriptor.fields:
            check = _checker(f, shapes)
            if check is not None:
                self.checks.append((f.name, check))
        self.oneofs = [
            frozenset(f.name for f in o.fields) for o in descriptor.oneofs if len(o.fields) > 1
        ]

    def plain(self, data: dict[str, Any]) -> bool:
        """Whether the constructor builds what json_format would; UnknownField if a key is."""
        if not data.keys() <= self.names:
            self._unknown(data)
            return False
        for name, check in self.checks:
            value = data.get(name, _ABSENT)
            if value is _ABSENT:
                continue
            try:
                if not check(value):
                    return False
            except UnknownField as e:
                raise e.under(name) from None
        return not self.oneofs or all(len(o & data.keys()) < 2 for o in self.oneofs)

    def _unknown(self, data: dict[str, Any]) -> None:
        for key in data:
            if key not in self.names and key not in self.aliases:
                raise UnknownField(key)


_ABSENT = object()


def _never(value: Any) -> bool:
    return False


def _checker(field: FieldDescriptor, shapes: dict[str, _Shape]) -> _Check | None:
    """How to tell a plain value of `field`; None when any value is (the constructor refuses
    what json_format would read otherwise)."""
    kind = kind_of(field)
    if kind in (STRING_FORM, OTHER, BYTES):
        return _never  # their JSON forms are json_format's business
    sub = None
    if kind == MSG:
        message = message_of(field)
        sub = shapes.get(message.full_name) or _Shape(message, shapes)
    if is_repeated(field):
        return _list_checker(kind, sub)
    if sub is not None:
        shape = sub
        return lambda v: type(v) is not dict or shape.plain(v)
    allowed = _PLAIN_TYPES.get(kind)
    if allowed is None:
        return None  # strings and Structs
    if kind == FLOAT:
        return lambda v: type(v) in allowed and -_FLOAT_MAX <= v <= _FLOAT_MAX
    return lambda v: v is None or type(v) in allowed


def _list_checker(kind: int, sub: _Shape | None) -> _Check:
    if sub is not None:
        shape = sub

        def messages(values: Any) -> bool:
            if type(values) is not list:
                return values is None
            for i, item in enumerate(values):
                try:
                    if type(item) is dict and not shape.plain(item):
                        return False
                except UnknownField as e:
                    raise e.under(f"[{i}]") from None
            return True

        return messages
    allowed = _PLAIN_TYPES.get(kind)
    if allowed is None:  # strings and Structs: the constructor refuses a wrong element
        return lambda v: v is None or type(v) is list
    if kind == FLOAT:
        return lambda v: type(v) is list and _floats(v)
    return lambda v: type(v) is list and set(map(type, v)) <= allowed


def _floats(values: list[Any]) -> bool:
    if not set(map(type, values)) <= _PLAIN_TYPES[FLOAT]:
        return False
    return not values or (min(values) >= -_FLOAT_MAX and max(values) <= _FLOAT_MAX)


class Decoder:
    """Builds messages of one type from parsed JSON objects."""

    def __init__(self, descriptor: Descriptor) -> None:
        self.cls: type[Message] = message_factory.GetMessageClass(descriptor)
        shapes: dict[str, _Shape] = {}
        self.shape = _Shape(descriptor, shapes)
        # A Struct nests without bound; the server's parser stops at a depth (upb's 100).
        self.open_ended = any(s.open_ended for s in shapes.values())

    def __call__(self, data: dict[str, Any]) -> Message:
        """The message; UnknownField, or json_format.ParseError with json_format's words."""
        if self.shape.plain(data):
            try:
                return self.cls(**data)
            except (TypeError, ValueError, AttributeError, OverflowError, RecursionError):
                pass  # json_format decides, and words the error
        try:
            return json_format.ParseDict(data, self.cls())
        except json_format.ParseError:
            raise
        except RecursionError as e:
            raise json_format.ParseError("the JSON is nested too deeply") from e
        except (AttributeError, TypeError, ValueError, KeyError) as e:
            # json_format lets a few odd inputs through as these (an `@type` that is no string)
            raise json_format.ParseError(f"invalid value: {e}") from e

    def serialize(self, message: Message) -> bytes:
        """The message's wire form; ParseError if the server could not parse it back (its
        parser limits the nesting depth, and only a Struct can nest that deep)."""
        wire = message.SerializeToString()
        if self.open_ended:
            try:
                self.cls.FromString(wire)
            except DecodeError:
                raise json_format.ParseError("the JSON nests too deeply") from None
        return wire


# ---- output ------------------------------------------------------------------------------


def _number(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _float(value: float) -> float | str:
    shown = _number(value)
    return shown if isinstance(shown, str) else type_checkers.ToShortestFloat(value)


def _bytes(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def struct_to_json(struct: Any) -> dict[str, Any]:
    """A google.protobuf.Struct as json_format prints it (numbers as floats)."""
    fields = struct.fields
    return {key: _value(fields[key]) for key in fields}


def _value(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if math.isnan(number) or math.isinf(number):
            raise ValueError(f"Fail to serialize {number} for Value.number_value")
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_json(value.struct_value)
    if kind == "list_value":
        return [_value(v) for v in value.list_value.values]
    return None


def _other(message: Message) -> Any:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class Encoder:
    """Turns messages of one type into JSON-ready dicts exactly as json_format.MessageToDict
    (proto field names, fields without presence always printed).

    The work per message is compiled once per type into straight-line code (a loop over field
    specs costs several times more on a 500-result response)."""

    def __init__(self, descriptor: Descriptor, encoders: dict[str, Encoder] | None = None) -> None:
        encoders = {} if encoders is None else encoders
        encoders[descriptor.full_name] = self
        if any(is_map(f) for f in descriptor.fields):
            self.encode: Callable[[Message], dict[str, Any]] = _other  # rare here: json_format
            return
        self.encode = _compile(descriptor, encoders)

    def __call__(self, message: Message) -> dict[str, Any]:
        return self.encode(message)


def _compile(descriptor: Descriptor, encoders: dict[str, Encoder]) -> Callable[[Any], Any]:
    """def encode(m): out = {}; out["id"] = m.id; if m.HasField("error"): ...; return out"""
    lines = ["def encode(m):", "    out = {}"]
    names: dict[str, Any] = {}
    for i, f in enumerate(descriptor.fields):
        convert = _converter(f, kind_of(f), encoders)
        if convert is not None:
            names[f"c{i}"] = convert
        get = f"getattr(m, {f.name!r})" if keyword.iskeyword(f.name) else f"m.{f.name}"
        if is_repeated(f):
            value = f"[c{i}(v) for v in {get}]" if convert else f"list({get})"
        else:
            value = f"c{i}({get})" if convert else get
        if f.has_presence and not is_repeated(f):
            lines.append(f"    if m.HasField({f.name!r}):")
            lines.append(f"        out[{f.name!r}] = {value}")
        else:
            lines.append(f"    out[{f.name!r}] = {value}")
    lines.append("    return out")
    exec("\n".join(lines), names)  # the source is made of field names and fixed text only
    encode: Callable[[Any], Any] = names["encode"]
    return encode


def _converter(
    field: FieldDescriptor, kind: int, encoders: dict[str, Encoder]
) -> Callable[[Any], Any] | None:
    if kind == MSG:
        message = message_of(field)
        # Through the Encoder, not its function: a recursive type's may not be compiled yet.
        return encoders.get(message.full_name) or Encoder(message, encoders)
    if kind == ENUM and field.enum_type is not None:
        names = {v.number: v.name for v in field.enum_type.values}
        return lambda v: names.get(v, v)
    simple: dict[int, Callable[[Any], Any]] = {
        INT64: str,
        NUM: _number,
        FLOAT: _float,
        BYTES: _bytes,
        STRUCT: struct_to_json,
        STRING_FORM: lambda m: m.ToJsonString(),
        OTHER: _other,
    }
    return simple.get(kind)
