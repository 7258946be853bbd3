"""The one server interceptor: decode, authenticate, run the handler, map errors, observe (the
call's metrics, its span and one log line).

gRPC's server interceptors only see metadata, not the request, so this one re-wraps each
handler: the wrapper sees the decoded request (or every message of a client stream) and can
check its `project_id` against the key's project and its enum values against their enums.

It is also where grpc's status enum first appears: our errors carry `google.rpc` codes.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
from grpc_status import rpc_status

from zerodb_batch.domain.enums import check_enums
from zerodb_batch.errors import InvalidArgument, Unimplemented, ZeroDBError
from zerodb_batch.interceptors.auth import Access, Authenticator, api_key_from, check_project
from zerodb_batch.interceptors.overload import Admission
from zerodb_batch.observability.calls import Call, Observer, Site
from zerodb_batch.observability.tracing import Tracing
from zerodb_batch.storage.keys import Grant

log = logging.getLogger("zerodb_batch.rpc")

# Generic in the type stubs only; quoted so nothing subscripts the runtime classes.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ApiInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates calls, maps errors to `google.rpc.Status`, observes and logs every call."""

    def __init__(
        self,
        authenticator: Authenticator,
        observer: Observer | None = None,
        admission: Admission | None = None,
    ) -> None:
        self._auth = authenticator
        self._observer = observer or Observer(None, Tracing(None))
        # Unlimited unless told: tests and tools that build an interceptor need no cap.
        self._admission = admission or Admission(max_calls=2**31)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        access = Access.of(details.method, handler.request_streaming, handler.response_streaming)
        site = self._observer.site(details.method)
        call = _Call(details.method, self._auth, access, site, self._admission)
        decode = _lenient(handler.request_deserializer, site)
        encode = _measured(handler.response_serializer, site)
        if handler.request_streaming and not handler.response_streaming:
            return grpc.stream_unary_rpc_method_handler(
                call.wrap_stream_in(cast(Any, handler.stream_unary)), decode, encode
            )
        if handler.response_streaming and not handler.request_streaming:
            return grpc.unary_stream_rpc_method_handler(
                call.wrap_stream_out(cast(Any, handler.unary_stream)), decode, encode
            )
        if not handler.request_streaming:
            return grpc.unary_unary_rpc_method_handler(
                call.wrap_unary(cast(Any, handler.unary_unary)), decode, encode
            )
        if not access.refusal:
            return handler  # reflection: open, and its own business
        return grpc.stream_stream_rpc_method_handler(call.refuse_stream(), decode, encode)


class _Undecodable:
    """What a request that is not a valid message decodes to; the wrapper refuses it."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _lenient(
    deserializer: Callable[[bytes], Any] | None, site: Site
) -> Callable[[bytes], Any] | None:
    """The handler's decoder, returning _Undecodable instead of raising: grpc would answer an
    exception here with UNKNOWN, a Python class name and a traceback in the log. Each message's
    size goes to the metrics."""
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        site.received(len(data))
        try:
            return deserializer(data)
        except Exception as e:  # DecodeError, and anything else the decoder raises
            return _Undecodable(e)

    return decode


def _measured(
    serializer: Callable[[Any], bytes] | None, site: Site
) -> Callable[[Any], bytes] | None:
    """The handler's encoder, each message's size going to the metrics (when they are on)."""
    if serializer is None or site.rpc is None:
        return serializer

    def encode(message: Any) -> bytes:
        data = serializer(message)
        site.sent(len(data))
        return data

    return encode


def _checked_message(request: Any, method: str) -> Any:
    """The request, if it decoded and its enums hold defined values; else INVALID_ARGUMENT."""
    if isinstance(request, _Undecodable):
        raise InvalidArgument(
            f"the request to {method} is not a valid message: it is truncated or malformed, "
            "holds invalid UTF-8 in a string field, or nests JSON deeper than the decoder allows "
            "(metadata, payloads and rows may nest 20 levels)",
            reason="MALFORMED_REQUEST",
        )
    check_enums(request)
    return request


class _Call:
    """Wrappers for one method; each invocation gets its own timing and request id."""

    def __init__(
        self, method: str, auth: Authenticator, access: Access, site: Site, admission: Admission
    ) -> None:
        self.method = method
        self.auth = auth
        self.access = access
        self.site = site
        self.admission = admission

    async def _grant(self, context: Ctx, outcome: _Outcome) -> Grant | None:
        """What the key grants, for a method that needs a key (None for open methods); refused
        here already when the key lacks the method's scope, or its project is past its rate."""
        self.access.refuse_if_closed()
        if not self.access.scoped:
            return None
        grant = await self.auth.grant_of(api_key_from(context.invocation_metadata()))
        outcome.call.project = grant.project_id
        self.access.check_scope(grant)
        await self.admission.check_rate(grant.project_id)
        return grant

    def _slot(self) -> contextlib.AbstractContextManager[None]:
        """One of the server's concurrent-call slots; open methods (health) take none."""
        return self.admission.slot() if self.access.scoped else contextlib.nullcontext()

    def wrap_unary(self, behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def run(request: Any, context: Ctx) -> Any:
            async with _Outcome(self.site, context) as outcome:
                with self._slot():
                    grant = await self._grant(context, outcome)
                    request = self._accept(request, grant)
                    return await behaviour(request, context)

        return run

    def wrap_stream_in(
        self, behaviour: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def run(requests: AsyncIterator[Any], context: Ctx) -> Any:
            async with _Outcome(self.site, context) as outcome:
                with self._slot():
                    grant = await self._grant(context, outcome)
                    return await behaviour(await self._accept_stream(requests, grant), context)

        return run

    def wrap_stream_out(self, behaviour: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        async def run(request: Any, context: Ctx) -> AsyncIterator[Any]:
            async with _Outcome(self.site, context) as outcome:
                grant = await self._grant(context, outcome)
                responses = behaviour(self._accept(request, grant), context)
                if not inspect.isasyncgen(responses):
                    # A coroutine that writes its responses itself (context.write), as the
                    # health service's Watch does.
                    await responses
                    return
                async for response in responses:
                    yield response

        return run

    def refuse_stream(self) -> Callable[..., AsyncIterator[Any]]:
        async def run(requests: AsyncIterator[Any], context: Ctx) -> AsyncIterator[Any]:
            async with _Outcome(self.site, context):
                self.access.refuse_if_closed()  # always refuses: only closed ones come here
            yield None  # pragma: no cover - unreachable, makes this an async generator

        return run

    def _accept(self, request: Any, grant: Grant | None) -> Any:
        if self.access.scoped or isinstance(request, _Undecodable):
            request = _checked_message(request, self.method)
        if grant is not None:
            check_project(grant.project_id, request)
            self.access.check_scope(grant, request)
        return request

    async def _accept_each(
        self, requests: AsyncIterator[Any], grant: Grant | None
    ) -> AsyncIterator[Any]:
        """Every message of a client stream is checked as a unary request is."""
        async for request in requests:
            yield self._accept(request, grant)

    async def _accept_stream(
        self, requests: AsyncIterator[Any], grant: Grant | None
    ) -> AsyncIterator[Any]:
        """The client stream, its first message checked before the handler runs (so a handler
        that ends before reading cannot skip the project check), the rest as they are read."""
        accepted = self._accept_each(requests, grant)
        try:
            first = await anext(accepted)
        except StopAsyncIteration:
            return _empty()
        return _chain(first, accepted)


async def _empty() -> AsyncIterator[Any]:
    return
    yield  # pragma: no cover - makes this an async generator


async def _chain(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield first
    async for item in rest:
        yield item


class _Outcome:
    """Maps exceptions to statuses, finishes the call's observation and writes its log line
    (method, code, ms, request id; in JSON also the trace id and the key's project)."""

    def __init__(self, site: Site, context: Ctx) -> None:
        self.method = site.method
        self.context = context
        metadata = dict(context.invocation_metadata() or ())
        self.request_id = str(metadata.get("x-request-id") or uuid.uuid4().hex[:16])
        self.call: Call = site.start(metadata, self.request_id)

    async def __aenter__(self) -> _Outcome:
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, NotImplementedError):  # a generated base servicer's RPC
            exc = Unimplemented(f"{self.method} is not implemented yet")
        code = self._code(exc)
        self._log(code, exc)
        if isinstance(exc, ZeroDBError):
            status = rpc_status.to_status(exc.to_trailer_status())
            await self.context.abort(status.code, status.details, status.trailing_metadata)
        if exc is not None and code is grpc.StatusCode.INTERNAL:
            await self.context.abort(
                grpc.StatusCode.INTERNAL, f"internal error (request id {self.request_id})"
            )
        return False

    def _code(self, exc: BaseException | None) -> grpc.StatusCode:
        if exc is None:
            return self.context.code() or grpc.StatusCode.OK
        if isinstance(exc, ZeroDBError):
            return _GRPC_CODES[exc.code]
        if isinstance(exc, grpc.aio.AbortError):
            return self.context.code() or grpc.StatusCode.UNKNOWN
        if not isinstance(exc, Exception):
            return grpc.StatusCode.CANCELLED  # cancellation, shutdown
        return grpc.StatusCode.INTERNAL

    def _log(self, code: grpc.StatusCode, exc: BaseException | None) -> None:
        reason = exc.reason if isinstance(exc, ZeroDBError) else None
        fields = self.call.finish(code.value[0], code.name, reason)
        line = "rpc %s code=%s ms=%.1f request_id=%s"
        args = (self.method, code.name, fields["duration_ms"], self.request_id)
        if code is grpc.StatusCode.INTERNAL and exc is not None:
            log.error(line, *args, exc_info=exc, extra=fields)
        elif reason is not None:
            log.info(line + " reason=%s", *args, reason, extra=fields)
        else:
            log.info(line, *args, extra=fields)
