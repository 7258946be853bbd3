"""The one server interceptor: authenticate, run the handler, map errors, log one line.

gRPC's server interceptors only see metadata, not the request, so this one re-wraps each
handler: the wrapper sees the decoded request (or every message of a client stream) and can
check its `project_id` against the key's project.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
from grpc_status import rpc_status

from zerodb_batch.errors import ZeroDBError
from zerodb_batch.interceptors.auth import Authenticator, api_key_from, check_project

log = logging.getLogger("zerodb_batch.rpc")

_PROTECTED = "/zerodb."  # health and reflection stay open


# Generic in the type stubs only; quoted so nothing subscripts the runtime classes.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class ApiInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates `zerodb.*` calls, maps errors to `google.rpc.Status`, logs every call."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        call = _Call(details.method, self._auth if details.method.startswith(_PROTECTED) else None)
        if handler.request_streaming and not handler.response_streaming:
            return grpc.stream_unary_rpc_method_handler(
                call.wrap_stream_in(cast(Any, handler.stream_unary)),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.response_streaming and not handler.request_streaming:
            return grpc.unary_stream_rpc_method_handler(
                call.wrap_stream_out(cast(Any, handler.unary_stream)),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if not handler.request_streaming:
            return grpc.unary_unary_rpc_method_handler(
                call.wrap_unary(cast(Any, handler.unary_unary)),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return handler  # bidirectional streams: none in this API


class _Call:
    """Wrappers for one method; each invocation gets its own timing and request id."""

    def __init__(self, method: str, auth: Authenticator | None) -> None:
        self.method = method
        self.auth = auth

    async def _project(self, context: Ctx) -> str | None:
        if self.auth is None:
            return None
        return await self.auth.project_of(api_key_from(context.invocation_metadata()))

    def wrap_unary(self, behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def run(request: Any, context: Ctx) -> Any:
            async with _Outcome(self.method, context):
                project = await self._project(context)
                if project is not None:
                    check_project(project, request)
                return await _maybe_await(behaviour(request, context))

        return run

    def wrap_stream_in(
        self, behaviour: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def run(requests: AsyncIterator[Any], context: Ctx) -> Any:
            async with _Outcome(self.method, context):
                project = await self._project(context)
                return await _maybe_await(behaviour(_checked(requests, project), context))

        return run

    def wrap_stream_out(
        self, behaviour: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def run(request: Any, context: Ctx) -> AsyncIterator[Any]:
            async with _Outcome(self.method, context):
                project = await self._project(context)
                if project is not None:
                    check_project(project, request)
                async for response in behaviour(request, context):
                    yield response

        return run


async def _maybe_await(result: Any) -> Any:
    # The generated base servicers (for RPCs not built yet) are plain functions.
    return await result if inspect.isawaitable(result) else result


async def _checked(requests: AsyncIterator[Any], project: str | None) -> AsyncIterator[Any]:
    """Every message of a client stream must name the key's project."""
    async for request in requests:
        if project is not None:
            check_project(project, request)
        yield request


class _Outcome:
    """Maps exceptions to statuses and writes the RPC's log line (method, code, ms, request id)."""

    def __init__(self, method: str, context: Ctx) -> None:
        self.method = method
        self.context = context
        metadata = dict(context.invocation_metadata() or ())
        self.request_id = str(metadata.get("x-request-id") or uuid.uuid4().hex[:16])
        self.start = time.perf_counter()

    async def __aenter__(self) -> _Outcome:
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        code = self._code(exc)
        self._log(code, exc)
        if isinstance(exc, ZeroDBError):
            status = rpc_status.to_status(exc.to_status())
            await self.context.abort(status.code, status.details, status.trailing_metadata)
        if code is grpc.StatusCode.UNIMPLEMENTED and not isinstance(exc, ZeroDBError):
            await self.context.abort(code, f"{self.method} is not implemented yet")
        if exc is not None and code is grpc.StatusCode.INTERNAL:
            await self.context.abort(
                grpc.StatusCode.INTERNAL, f"internal error (request id {self.request_id})"
            )
        return False

    def _code(self, exc: BaseException | None) -> grpc.StatusCode:
        if exc is None:
            return self.context.code() or grpc.StatusCode.OK
        if isinstance(exc, ZeroDBError):
            return exc.code
        if isinstance(exc, grpc.aio.AbortError):
            return self.context.code() or grpc.StatusCode.UNKNOWN
        if isinstance(exc, NotImplementedError):
            return grpc.StatusCode.UNIMPLEMENTED
        if not isinstance(exc, Exception):
            return grpc.StatusCode.CANCELLED  # cancellation, shutdown
        return grpc.StatusCode.INTERNAL

    def _log(self, code: grpc.StatusCode, exc: BaseException | None) -> None:
        ms = (time.perf_counter() - self.start) * 1000
        line = "rpc %s code=%s ms=%.1f request_id=%s"
        args = (self.method, code.name, ms, self.request_id)
        if code is grpc.StatusCode.INTERNAL and exc is not None:
            log.error(line, *args, exc_info=exc)
        elif isinstance(exc, ZeroDBError):
            log.info(line + " reason=%s", *args, exc.reason)
        else:
            log.info(line, *args)
