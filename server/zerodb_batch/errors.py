"""Our error tree: each error knows its gRPC code, its ErrorInfo reason and its field violations.

Storage raises these instead of driver errors; the interceptor turns them into `google.rpc.Status`
with `ErrorInfo` and `BadRequest` details. Per-item results embed the same `google.rpc.Status`.
Codes are `google.rpc.code_pb2` values: grpc's own status enum appears only at the server border
(interceptors/), so nothing below the API layer depends on grpc.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

DOMAIN = "zerodb.ainative.studio"

# An error's status travels in the call's trailers, and grpc clients drop trailers past 8 KiB
# (their soft metadata limit; 16 KiB is the hard one), turning the answer into a bare
# RESOURCE_EXHAUSTED without details. The status is kept under this many bytes (base64 adds a
# third), its message under MAX_ERROR_MESSAGE_CHARS, and each detail text under
# MAX_ERROR_TEXT_CHARS; violations past the budget are counted, not listed.
MAX_TRAILER_STATUS_BYTES = 4096
MAX_ERROR_MESSAGE_CHARS = 512
MAX_ERROR_TEXT_CHARS = 200

Code = int  # a google.rpc.Code value


@dataclass(frozen=True)
class Violation:
    """One bad field: `field` is a path such as `records[3].importance`."""

    field: str
    description: str
    reason: str = "INVALID_FIELD"


class ZeroDBError(Exception):
    """Base of every error the API returns on purpose."""

    code: Code = code_pb2.INTERNAL
    reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        violations: Iterable[Violation] = (),
        metadata: Mapping[str, object] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.violations = tuple(violations)
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}
        if reason is not None:
            self.reason = reason

    def to_status(self) -> status_pb2.Status:
        """This error as a `google.rpc.Status` with ErrorInfo and, if any, BadRequest."""
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=DOMAIN, metadata=self.metadata
        )
        details = [_pack(info)]
        if self.violations:
            details.append(_pack(_bad_request(self.violations)))
        details.extend(_pack(d) for d in self.extra_details())
        return status_pb2.Status(code=self.code, message=self.message, details=details)

    def extra_details(self) -> list[Message]:
        """Details beyond ErrorInfo and BadRequest (RetryInfo, for one)."""
        return []

    def to_trailer_status(self) -> status_pb2.Status:
        """`to_status()` sized for a call's trailers (MAX_TRAILER_STATUS_BYTES): long
        texts are cut, and violations that do not fit are left out and counted in ErrorInfo's
        metadata (`violations_total`, `violations_shown`). Any error (even 1000 bad update
        paths or a 100 KB id quoted back) thus reaches the client with its details."""
        status = self.to_status()
        if status.ByteSize() <= MAX_TRAILER_STATUS_BYTES:
            return status
        metadata = {k: _cut(v) for k, v in self.metadata.items()}
        shown: list[Violation] = []
        for v in self.violations:
            shown.append(Violation(_cut(v.field), _cut(v.description), _cut(v.reason)))
            if _trimmed(self, metadata, shown).ByteSize() > MAX_TRAILER_STATUS_BYTES:
                shown.pop()
                break
        return _trimmed(self, metadata, shown)


def _cut(text: str, limit: int = MAX_ERROR_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _trimmed(
    error: ZeroDBError, metadata: dict[str, str], shown: list[Violation]
) -> status_pb2.Status:
    if len(shown) < len(error.violations):
        metadata = {
            **metadata,
            "violations_total": str(len(error.violations)),
            "violations_shown": str(len(shown)),
        }
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=metadata)
    details = [_pack(info)] + ([_pack(_bad_request(shown))] if shown else [])
    details.extend(_pack(d) for d in error.extra_details())
    message = _cut(error.message, MAX_ERROR_MESSAGE_CHARS)
    return status_pb2.Status(code=error.code, message=message, details=details)


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _bad_request(violations: Iterable[Violation]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=v.field, description=v.description, reason=v.reason
            )
            for v in violations
        ]
    )


class InvalidArgument(ZeroDBError):
    code = code_pb2.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"


class BatchTooLarge(InvalidArgument):
    reason = "BATCH_TOO_LARGE"

    def __init__(self, field: str, actual: int, maximum: int) -> None:
        super().__init__(
            f"{field} has {actual} items; at most {maximum} are allowed per call",
            violations=[Violation(field, f"at most {maximum} items, got {actual}", self.reason)],
            metadata={"field": field, "max": maximum, "actual": actual},
        )


class RequestIdReused(InvalidArgument):
    reason = "REQUEST_ID_REUSED"

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"request_id {request_id!r} was already used for a different request; "
            "use a new request_id for a new request",
            violations=[Violation("request_id", "already used with another payload", self.reason)],
            metadata={"request_id": request_id},
        )


class DimensionMismatch(InvalidArgument):
    """Vectors whose dimension differs from their namespace's (fixed by its first vector)."""

    reason = "DIMENSION_MISMATCH"

    def __init__(self, mismatches: Iterable[tuple[str, str, int, int]]) -> None:
        """`mismatches`: (field path, namespace, the namespace's dimension, the vector's)."""
        found = list(mismatches)
        field, namespace, expected, actual = found[0]
        super().__init__(
            f"{field} has {actual} dimensions but namespace {namespace!r} holds "
            f"{expected}-dimensional vectors"
            + (f" ({len(found)} vectors differ)" if len(found) > 1 else ""),
            violations=[
                Violation(f, f"namespace {ns!r} has dimension {e}, got {a}", self.reason)
                for f, ns, e, a in found
            ],
            metadata={"namespace": namespace, "expected": expected, "actual": actual},
        )


class Unauthenticated(ZeroDBError):
    code = code_pb2.UNAUTHENTICATED
    reason = "API_KEY_INVALID"


class PermissionDenied(ZeroDBError):
    code = code_pb2.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class NotFound(ZeroDBError):
    code = code_pb2.NOT_FOUND
    reason = "NOT_FOUND"


class FailedPrecondition(ZeroDBError):
    code = code_pb2.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class ResourceExhausted(ZeroDBError):
    code = code_pb2.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


class Overloaded(ResourceExhausted):
    """Too many calls (at once on this server, or per second for a project): retry after
    `retry_after` seconds, sent as `google.rpc.RetryInfo`."""

    def __init__(self, message: str, *, reason: str, retry_after: float, **metadata: object):
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after

    def extra_details(self) -> list[Message]:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(1, round(self.retry_after * 1000)))
        return [error_details_pb2.RetryInfo(retry_delay=delay)]


class Unavailable(ZeroDBError):
    """A dependency (PostgreSQL, Redis) cannot be reached; the call may be retried."""

    code = code_pb2.UNAVAILABLE
    reason = "DEPENDENCY_UNAVAILABLE"


class AlreadyExists(ZeroDBError):
    code = code_pb2.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class Aborted(ZeroDBError):
    """A concurrency conflict (deadlock, serialization failure, lock wait); retry the call."""

    code = code_pb2.ABORTED
    reason = "ABORTED"


class DeadlineExceeded(ZeroDBError):
    code = code_pb2.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class Unimplemented(ZeroDBError):
    code = code_pb2.UNIMPLEMENTED
    reason = "NOT_IMPLEMENTED"


class StartupError(Exception):
    """The server cannot start; the message says why in words for a human."""
