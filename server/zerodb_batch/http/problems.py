"""Errors over HTTP: Google's code-to-status mapping and the `{"error": {...}}` body.

A gRPC error keeps its code name, message and `google.rpc.Status` details (ErrorInfo,
BadRequest, ... as JSON); the HTTP status comes from the code, as in google/rpc/code.proto.
Errors the door finds itself (malformed JSON, a wrong content type, a body over the limit, an
unknown route) use the same body with an HTTP status of their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import orjson
from aiohttp import web
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from zerodb_batch.errors import DOMAIN

# google/rpc/code.proto, "HTTP Mapping" of each code.
HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

_DETAILS_KEY = "grpc-status-details-bin"


class HttpProblem(Exception):
    """An error the door answers by itself, before or instead of a gRPC call."""

    def __init__(
        self,
        http_status: int,
        message: str,
        reason: str,
        *,
        code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT,
        field: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.message = message
        self.reason = reason
        self.code = code
        self.field = field
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}

    def body(self) -> dict[str, Any]:
        details: list[Any] = [
            error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)
        ]
        if self.field is not None:
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=self.field, description=self.message, reason=self.reason
            )
            details.append(error_details_pb2.BadRequest(field_violations=[violation]))
        return envelope(self.http_status, self.code.name, self.message, [_any(d) for d in details])


def _any(message: Any) -> dict[str, Any]:
    return {
        "@type": f"type.googleapis.com/{message.DESCRIPTOR.full_name}",
        **json_format.MessageToDict(message, preserving_proto_field_name=True),
    }


def envelope(http_status: int, status: str, message: str, details: Sequence[Any]) -> dict[str, Any]:
    return {
        "error": {"code": http_status, "message": message, "status": status, "details": details}
    }


def rpc_error_body(error: grpc.aio.AioRpcError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body for a failed call, with the details its trailers carry."""
    code = error.code()
    http_status = HTTP_STATUS.get(code, 500)
    status = _status_of(error)
    details = [_detail(d) for d in status.details] if status else []
    return http_status, envelope(http_status, code.name, error.details() or "", details)


def retry_headers(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """`Retry-After` (whole seconds, rounded up: HTTP takes no fractions) for a refusal whose
    status carries `google.rpc.RetryInfo` (overload: RESOURCE_EXHAUSTED)."""
    info = error_details_pb2.RetryInfo()
    status = _status_of(error)
    if status is None or not any(packed.Unpack(info) for packed in status.details):
        return {}
    seconds = math.ceil(info.retry_delay.ToTimedelta().total_seconds())
    return {"Retry-After": str(max(1, seconds))}


def _status_of(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    for key, value in error.trailing_metadata() or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def _detail(packed: Any) -> Any:
    try:
        return json_format.MessageToDict(packed, preserving_proto_field_name=True)
    except (TypeError, KeyError, json_format.Error):  # a detail type this process does not know
        return {"@type": packed.type_url}


def respond(http_status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> web.Response:
    return web.Response(
        status=http_status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=headers,
    )
