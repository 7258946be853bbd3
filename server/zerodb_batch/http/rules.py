"""HTTP bindings read from the services' `google.api.http` options: one per rule.

A path template (`/api/v1/projects/{project_id}/tables/{name}`, also `{f=pattern/*}`, `**` and a
trailing `:verb`) becomes an aiohttp route pattern; the request fields it names come from the path,
`body` says which come from the JSON body (`*`: all others), and on a rule without a body every
other field may come from the query string. The OpenAPI generator reads the same bindings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor, ServiceDescriptor

from zerodb_batch.http.jsonpb import is_map, is_repeated

_VERBS = ("get", "put", "post", "delete", "patch")
_VARIABLE = re.compile(r"\{([A-Za-z_][\w.]*)(?:=([^}]*))?\}")


@dataclass(frozen=True)
class Binding:
    """One HTTP route of one RPC."""

    method: MethodDescriptor
    verb: str  # GET, POST, ...
    template: str  # as written in the proto
    route: str  # the same as an aiohttp pattern
    path_fields: tuple[tuple[str, str], ...]  # (route variable, request field path)
    body: str  # "*", a field name, or "" (no body)

    @property
    def rpc(self) -> str:
        """The gRPC method path: `/zerodb.v1.MemoryService/BatchUpsertMemories`."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def client_streaming(self) -> bool:
        return bool(self.method.client_streaming)

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)

    def bound_fields(self) -> set[str]:
        """Top-level request fields the path sets."""
        return {path.split(".", 1)[0] for _, path in self.path_fields}

    def query_fields(self) -> list[FieldDescriptor]:
        """Top-level request fields the query string may set (none when `body` is `*`)."""
        if self.body == "*":
            return []
        taken = self.bound_fields() | {self.body}
        return [f for f in self.method.input_type.fields if f.name not in taken]

    def single_repeated_field(self) -> FieldDescriptor | None:
        """The request's one repeated field outside the path, if it has exactly one: a bare
        JSON array body is that field (ZeroDB's API takes `[...]` for some batches)."""
        bound = self.bound_fields()
        repeated = [
            f
            for f in self.method.input_type.fields
            if is_repeated(f) and f.name not in bound and not is_map(f)
        ]
        return repeated[0] if len(repeated) == 1 else None


def bindings(services: Iterable[ServiceDescriptor]) -> Iterator[Binding]:
    """Every binding of every method of `services` (additional bindings included)."""
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            rule = options.Extensions[annotations_pb2.http]
            for one in (rule, *rule.additional_bindings):
                yield _binding(method, one)


def _binding(method: MethodDescriptor, rule: http_pb2.HttpRule) -> Binding:
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        verb, template = rule.custom.kind.upper(), rule.custom.path
    elif kind in _VERBS:
        verb, template = kind.upper(), getattr(rule, kind)
    else:
        raise ValueError(f"{method.full_name}: an http rule without a pattern")
    route, fields = to_route(template)
    return Binding(method, verb, template, route, fields, rule.body)


def to_route(template: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """An aiohttp pattern for a path template, and its (route variable, field path) pairs."""
    fields: list[tuple[str, str]] = []

    def variable(m: re.Match[str]) -> str:
        name = f"v{len(fields)}"
        fields.append((name, m[1]))
        pattern = m[2]
        if pattern in (None, "*"):
            return "{" + name + "}"
        return "{" + name + ":" + _segments_regex(pattern) + "}"

    route = _VARIABLE.sub(variable, template)
    return route, tuple(fields)


def _segments_regex(pattern: str) -> str:
    parts = []
    for segment in pattern.split("/"):
        if segment == "**":
            parts.append(".+")
        elif segment == "*":
            parts.append("[^/]+")
        else:
            parts.append(re.escape(segment))
    return "/".join(parts)
