"""One request message from an HTTP request: its path variables, query string and JSON body.

Rules (those of google.api.http, plus one of ours):
- `body: "*"`: the JSON object is the request; a bare JSON array is the request's one repeated
  field (`[{...}, ...]` for `{"interactions": [{...}, ...]}`) when it has exactly one.
- `body: "<field>"`: the JSON value is that field.
- Path variables set their fields; a body that sets the same field to another value is refused.
- Without a body, the query string sets the other fields: `?page_size=10&tags=a&tags=b`, nested
  fields by dotted path (`?start_time=2024-01-01T00:00:00Z`), values in their JSON string forms.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from zerodb_batch.http.jsonpb import Decoder, UnknownField, is_repeated
from zerodb_batch.http.problems import HttpProblem
from zerodb_batch.http.rules import Binding

_AT = re.compile(r' at "?([\w.\[\]]+?)"?\.*$')
_PREFIX = re.compile(r"^(?:Failed to parse \w+ field: )+")
_NOT_A_LIST = re.compile(r"repeated field (\w+) must be in \[\]")


class Assembler:
    """Builds the request message of one binding."""

    def __init__(self, binding: Binding) -> None:
        self.binding = binding
        self.decode = Decoder(binding.method.input_type)
        self.array_field = binding.single_repeated_field()
        self.query_fields = {f.name: f for f in binding.query_fields()}

    def build(
        self,
        path: Mapping[str, str],
        body: Any = None,
        query: Iterable[tuple[str, str]] = (),
    ) -> Message:
        data = self._from_body(body)
        self._add_query(data, query)
        for variable, field in self.binding.path_fields:
            _set_path(data, field, path[variable])
        return self.decode_data(data)

    def wire(
        self,
        path: Mapping[str, str],
        body: Any = None,
        query: Iterable[tuple[str, str]] = (),
    ) -> bytes:
        """The request built by `build`, serialized."""
        return self.serialize(self.build(path, body, query))

    def serialize(self, message: Message) -> bytes:
        try:
            return self.decode.serialize(message)
        except json_format.ParseError as e:
            raise HttpProblem(400, str(e), "INVALID_FIELD", field="") from None

    def decode_data(self, data: dict[str, Any]) -> Message:
        try:
            return self.decode(data)
        except UnknownField as e:
            raise HttpProblem(
                400, f"unknown field {e.path!r}", "UNKNOWN_FIELD", field=e.path
            ) from None
        except json_format.ParseError as e:
            raise _parse_problem(str(e), self.binding.method.input_type) from None

    def _from_body(self, body: Any) -> dict[str, Any]:
        body_field = self.binding.body
        if not body_field or body is None:
            return {}
        if body_field != "*":
            return {body_field: body}
        if isinstance(body, dict):
            return body
        if isinstance(body, list) and self.array_field is not None:
            return {self.array_field.name: body}
        expected = "a JSON object"
        if self.array_field is not None:
            expected += f" (or an array of {self.array_field.name})"
        raise HttpProblem(400, f"the body must be {expected}", "INVALID_BODY", field="")

    def _add_query(self, data: dict[str, Any], query: Iterable[tuple[str, str]]) -> None:
        for key, value in query:
            top = key.split(".", 1)[0]
            field = self.query_fields.get(top)
            if field is None:
                raise HttpProblem(
                    400, f"unknown query parameter {key!r}", "UNKNOWN_FIELD", field=key
                )
            _set_query(data, key, value, _leaf(field, key))


def _leaf(field: FieldDescriptor, key: str) -> FieldDescriptor | None:
    """The field a dotted query key names, or None when the path leaves the message."""
    for part in key.split(".")[1:]:
        message: Descriptor | None = field.message_type
        if message is None or part not in message.fields_by_name:
            return None
        field = message.fields_by_name[part]
    return field


def _set_query(data: dict[str, Any], key: str, raw: str, field: FieldDescriptor | None) -> None:
    value: Any = raw
    if field is not None and field.type == FieldDescriptor.TYPE_BOOL:
        value = {"true": True, "false": False}.get(raw, raw)
    parts = key.split(".")
    target = data
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    if field is not None and is_repeated(field):
        target.setdefault(parts[-1], []).append(value)
    else:
        target[parts[-1]] = value


def _set_path(data: dict[str, Any], field_path: str, value: str) -> None:
    *parents, name = field_path.split(".")
    target = data
    for part in parents:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise HttpProblem(400, f"{part} must be an object", "INVALID_BODY", field=part)
    sent = target.get(name)
    if sent not in (None, "", value):
        raise HttpProblem(
            400,
            f"{field_path} is {value!r} in the path but {sent!r} in the body",
            "PATH_MISMATCH",
            field=field_path,
        )
    target[name] = value


def _parse_problem(text: str, message: Descriptor) -> HttpProblem:
    """json_format's error as a 400 naming the field it points at."""
    first = text.splitlines()[0] if text else "invalid request"
    field = ""
    if m := _AT.search(first):
        where = m[1]
        field = where.split(".", 1)[1] if where.startswith(message.name + ".") else ""
        first = first[: m.start()]
    if m := _NOT_A_LIST.search(first):  # json_format points at the parent of the field
        field = f"{field}.{m[1]}" if field else m[1]
    return HttpProblem(400, _PREFIX.sub("", first).rstrip("."), "INVALID_FIELD", field=field)
