"""The OpenAPI 3.1 document of the HTTP/JSON door, made from the protos and their comments.

scripts/gen_protos.py writes it to generated/zerodb/openapi.json; the server serves that file at
`GET /openapi.json`. Routes come from the same bindings the door serves (zerodb_batch.http.rules),
descriptions from the proto comments (a descriptor set with source info).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from zerodb_batch.http import jsonpb
from zerodb_batch.http.ndjson import NDJSON_TYPES
from zerodb_batch.http.rules import Binding, bindings

PACKAGE = "zerodb.v1"
_REF = "#/components/schemas/"
_SCALARS: dict[int, dict[str, Any]] = {
    jsonpb.STR: {"type": "string"},
    jsonpb.BOOL: {"type": "boolean"},
    jsonpb.INT: {"type": "integer", "format": "int32"},
    jsonpb.INT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    jsonpb.NUM: {"type": "number", "format": "double"},
    jsonpb.FLOAT: {"type": "number", "format": "float"},
    jsonpb.BYTES: {"type": "string", "contentEncoding": "base64"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    "google.protobuf.FieldMask": {"type": "string", "description": "field paths, comma-separated"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
}
_INFO = """\
ZeroDB's batch operations over HTTP/JSON: the same calls as the gRPC API (package `zerodb.v1`),
through the same authentication and checks.

- Send the API key in `x-api-key` (or `authorization: Bearer <key>`).
- Field names are the protos' snake_case names; 64-bit integers are JSON strings in answers (numbers
  or strings are accepted); enums are their names. Fields without presence always appear.
- A POST body is the request as a JSON object; a bare JSON array is the request's one repeated
  field when it has exactly one (`[{...}]` for `{"interactions": [{...}]}`).
- Errors: `{"error": {"code", "message", "status", "details"}}`, the HTTP status from the gRPC code
  by Google's mapping, the details those of the gRPC status (`ErrorInfo`, `BadRequest`, ...).
- Client-streaming loads take NDJSON (one chunk message a line) and answer the final response;
  `SubscribeEvents` answers Server-Sent Events (`Last-Event-ID` resumes after that stream id).
- `x-request-id` is forwarded to the server's log and echoed; `grpc-timeout` (`30S`, `500m`)
  sets the call's deadline.
"""


def build(descriptor_set: bytes) -> dict[str, Any]:
    """The document for the services of `zerodb.v1` in a descriptor set with source info."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    comments = dict(_comments(files))
    ours = [f for f in files.file if f.package == PACKAGE]
    services = [pool.FindServiceByName(f"{PACKAGE}.{s.name}") for f in ours for s in f.service]
    doc = _Document(comments)
    for binding in bindings(services):
        doc.add(binding)
    return doc.render(
        [{"name": s.name, "description": comments.get(s.full_name, "")} for s in services]
    )


class _Document:
    def __init__(self, comments: dict[str, str]) -> None:
        self.comments = comments
        self.paths: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, Any] = {}

    def render(self, tags: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "openapi": "3.1.0",
            "info": {"title": "zerodb-batch", "version": PACKAGE, "description": _INFO},
            "tags": tags,
            "security": [{"apiKey": []}, {"bearer": []}],
            "paths": self.paths,
            "components": {
                "schemas": dict(sorted(self.schemas.items())),
                "securitySchemes": {
                    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                    "bearer": {"type": "http", "scheme": "bearer"},
                },
                "responses": {"Error": _error_response()},
            },
        }

    def add(self, binding: Binding) -> None:
        method = binding.method
        comment = self.comments.get(method.full_name, "")
        operation: dict[str, Any] = {
            "operationId": f"{method.containing_service.name}_{method.name}",
            "tags": [method.containing_service.name],
            "summary": comment.split("\n\n")[0].split(". ")[0].rstrip(".").replace("\n", " "),
            "description": comment,
            "parameters": [*self._path_parameters(binding), *self._query_parameters(binding)],
            "responses": {
                "200": self._success(binding),
                "default": {"$ref": "#/components/responses/Error"},
            },
        }
        if binding.body:
            operation["requestBody"] = self._body(binding)
        path = binding.template
        for _, field in binding.path_fields:
            path = _replace_variable(path, field)
        self.paths.setdefault(path, {})[binding.verb.lower()] = operation

    def _path_parameters(self, binding: Binding) -> Iterator[dict[str, Any]]:
        for _, field_path in binding.path_fields:
            field = _field_at(binding.method.input_type, field_path)
            yield {
                "name": field_path,
                "in": "path",
                "required": True,
                "description": self.comments.get(field.full_name, ""),
                "schema": self._schema(field),
            }

    def _query_parameters(self, binding: Binding) -> Iterator[dict[str, Any]]:
        for field in binding.query_fields():
            parameter = {
                "name": field.name,
                "in": "query",
                "description": self.comments.get(field.full_name, ""),
                "schema": self._schema(field),
            }
            if jsonpb.is_repeated(field):
                parameter.update(style="form", explode=True)
            yield parameter

    def _body(self, binding: Binding) -> dict[str, Any]:
        request = binding.method.input_type
        if binding.body != "*":
            schema = self._schema(request.fields_by_name[binding.body])
        else:
            schema = self._message(request)
            single = binding.single_repeated_field()
            if single is not None and not binding.client_streaming:
                schema = {"oneOf": [schema, self._schema(single)]}
        if binding.client_streaming:
            return {
                "required": True,
                "description": "NDJSON: one JSON message of the stream per line.",
                "content": {kind: {"schema": schema} for kind in NDJSON_TYPES},
            }
        return {"required": False, "content": {"application/json": {"schema": schema}}}

    def _success(self, binding: Binding) -> dict[str, Any]:
        reply = binding.method.output_type
        if binding.server_streaming:
            return {
                "description": "Server-Sent Events: each event's `data` is the JSON of the "
                f"member of `{reply.name}` that `event` names; `id` is its stream id.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
                "x-event-schema": self._message(reply),
            }
        return {
            "description": self.comments.get(reply.full_name, reply.name),
            "content": {"application/json": {"schema": self._message(reply)}},
        }

    def _schema(self, field: FieldDescriptor) -> dict[str, Any]:
        kind = jsonpb.kind_of(field)
        if jsonpb.is_map(field):
            value = jsonpb.message_of(field).fields_by_name["value"]
            one: dict[str, Any] = {"type": "object", "additionalProperties": self._schema(value)}
            return one
        if field.enum_type is not None:
            one = self._enum(field.enum_type)
        elif field.message_type is not None:
            one = self._message(field.message_type)
        else:
            one = dict(_SCALARS[kind])
        return {"type": "array", "items": one} if jsonpb.is_repeated(field) else one

    def _message(self, message: Descriptor) -> dict[str, Any]:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.schemas:
            self.schemas[message.full_name] = {}  # placeholder: messages may refer to themselves
            self.schemas[message.full_name] = {
                "type": "object",
                "description": self.comments.get(message.full_name, ""),
                "properties": {
                    f.name: {**self._schema(f), "description": self.comments.get(f.full_name, "")}
                    for f in message.fields
                },
                "additionalProperties": False,
            }
        return {"$ref": _REF + message.full_name}

    def _enum(self, enum: EnumDescriptor) -> dict[str, Any]:
        if enum.full_name not in self.schemas:
            values = "\n".join(
                f"- `{v.name}`: {self.comments.get(f'{enum.full_name}.{v.name}', '')}"
                for v in enum.values
            )
            self.schemas[enum.full_name] = {
                "type": "string",
                "enum": [v.name for v in enum.values],
                "description": f"{self.comments.get(enum.full_name, '')}\n\n{values}".strip(),
            }
        return {"$ref": _REF + enum.full_name}


def _error_response() -> dict[str, Any]:
    error = {
        "type": "object",
        "properties": {
            "code": {"type": "integer", "description": "the HTTP status"},
            "message": {"type": "string"},
            "status": {"type": "string", "description": "the google.rpc.Code name"},
            "details": {"type": "array", "items": _WELL_KNOWN["google.protobuf.Any"]},
        },
        "required": ["code", "message", "status", "details"],
    }
    return {
        "description": "An error: the HTTP status from the gRPC code (Google's mapping) and the "
        "details of the gRPC status.",
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"error": error}, "required": ["error"]}
            }
        },
    }


def _field_at(message: Descriptor, path: str) -> FieldDescriptor:
    *parents, name = path.split(".")
    for part in parents:
        message = jsonpb.message_of(message.fields_by_name[part])
    return message.fields_by_name[name]


def _replace_variable(template: str, field: str) -> str:
    start = template.index("{" + field)
    end = template.index("}", start)
    return template[:start] + "{" + field + "}" + template[end + 1 :]


def _comments(files: descriptor_pb2.FileDescriptorSet) -> Iterator[tuple[str, str]]:
    """(full name, leading comment) of every commented element."""
    for file in files.file:
        names = dict(_element_paths(file))
        for location in file.source_code_info.location:
            name = names.get(tuple(location.path))
            if name and location.leading_comments:
                yield name, _tidy(location.leading_comments)


def _element_paths(
    file: descriptor_pb2.FileDescriptorProto,
) -> Iterator[tuple[tuple[int, ...], str]]:
    prefix = f"{file.package}." if file.package else ""
    for i, message in enumerate(file.message_type):
        yield from _message_paths(message, (4, i), prefix + message.name)
    for i, enum in enumerate(file.enum_type):
        yield from _enum_paths(enum, (5, i), prefix + enum.name)
    for i, service in enumerate(file.service):
        yield (6, i), prefix + service.name
        for j, method in enumerate(service.method):
            yield (6, i, 2, j), f"{prefix}{service.name}.{method.name}"


def _message_paths(
    message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], name: str
) -> Iterator[tuple[tuple[int, ...], str]]:
    yield path, name
    for j, field in enumerate(message.field):
        yield (*path, 2, j), f"{name}.{field.name}"
    for j, nested in enumerate(message.nested_type):
        yield from _message_paths(nested, (*path, 3, j), f"{name}.{nested.name}")
    for j, enum in enumerate(message.enum_type):
        yield from _enum_paths(enum, (*path, 4, j), f"{name}.{enum.name}")


def _enum_paths(
    enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], name: str
) -> Iterator[tuple[tuple[int, ...], str]]:
    yield path, name
    for j, value in enumerate(enum.value):
        yield (*path, 2, j), f"{name}.{value.name}"


def _tidy(comment: str) -> str:
    lines = [line[1:] if line.startswith(" ") else line for line in comment.strip("\n").split("\n")]
    return "\n".join(lines).strip()
