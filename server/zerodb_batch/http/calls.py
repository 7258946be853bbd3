"""What an HTTP request carries into its gRPC call: the routes' shared parts and call options.

Forwarded as call metadata: `x-api-key`, `authorization`, the W3C trace context (`traceparent`,
`tracestate`, `baggage`: the call's span continues the caller's trace) and `x-request-id` (one is
made when the client sends none, and returned in the response's `x-request-id` header). A
`grpc-timeout` header (gRPC's own form, as grpc-gateway takes it: `30S`, `500m`) becomes the
call's deadline.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import orjson
from aiohttp import web
from google.protobuf import message_factory
from google.protobuf.message import Message

from zerodb_batch.http.assemble import Assembler
from zerodb_batch.http.jsonpb import Encoder
from zerodb_batch.http.problems import HttpProblem
from zerodb_batch.http.rules import Binding

_FORWARDED = ("x-api-key", "authorization", "traceparent", "tracestate", "baggage")
_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNIT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


@dataclass(frozen=True)
class CallOptions:
    request_id: str
    metadata: tuple[tuple[str, str], ...]
    timeout: float | None

    @classmethod
    def of(cls, request: web.Request) -> CallOptions:
        headers = request.headers
        request_id = headers.get("x-request-id") or uuid.uuid4().hex[:16]
        metadata = [(k, headers[k]) for k in _FORWARDED if k in headers]
        metadata.append(("x-request-id", request_id))
        return cls(request_id, tuple(metadata), _timeout(headers.get("grpc-timeout")))


def _timeout(header: str | None) -> float | None:
    if header is None:
        return None
    m = _TIMEOUT.match(header.strip())
    if m is None:
        raise HttpProblem(
            400,
            f"grpc-timeout must be digits and a unit (H, M, S, m, u, n), got {header!r}",
            "INVALID_TIMEOUT",
        )
    return int(m[1]) * _UNIT_SECONDS[m[2]]


class Route:
    """One binding with what its calls need: request builder, response encoder, the callable."""

    def __init__(self, binding: Binding, channel: grpc.aio.Channel) -> None:
        self.binding = binding
        self.assembler = Assembler(binding)
        method = binding.method
        self.output: type[Message] = message_factory.GetMessageClass(method.output_type)
        self.encode = Encoder(method.output_type)
        # No (de)serializers: the door sends and takes bytes and decodes them itself.
        if binding.client_streaming:
            self.call: Any = channel.stream_unary(binding.rpc)
        elif binding.server_streaming:
            self.call = channel.unary_stream(binding.rpc)
        else:
            self.call = channel.unary_unary(binding.rpc)

    def json(self, reply: bytes) -> bytes:
        """A serialized response message as the JSON body."""
        return orjson.dumps(self.encode(self.output.FromString(reply)))
