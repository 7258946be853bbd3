"""The door's aiohttp server, in the gRPC server's event loop: routes, errors, start and stop.

Every route comes from a `google.api.http` rule (rules.py). A unary RPC takes a JSON body (or the
query string) and answers JSON; a client-streaming RPC takes NDJSON (ndjson.py); a
server-streaming RPC answers Server-Sent Events (sse.py). Calls go to the server itself over a
private unix socket, so they pass through its interceptors like any gRPC call.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
import orjson
from aiohttp import web
from google.protobuf.descriptor import ServiceDescriptor

from zerodb_batch.errors import StartupError
from zerodb_batch.http import docs, ndjson, sse
from zerodb_batch.http.calls import CallOptions, Route
from zerodb_batch.http.problems import HttpProblem, respond, retry_headers, rpc_error_body
from zerodb_batch.http.rules import bindings

log = logging.getLogger("zerodb_batch.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_JSON_TYPES = ("application/json",)
_HTTP_ERRORS = {
    404: ("ROUTE_NOT_FOUND", grpc.StatusCode.NOT_FOUND),
    405: ("METHOD_NOT_ALLOWED", grpc.StatusCode.UNIMPLEMENTED),
}
_OPTIONS = web.RequestKey("options", CallOptions)


class Door:
    """The HTTP/JSON server; `port` is the bound port (useful with port 0)."""

    def __init__(
        self, runner: web.AppRunner, site: web.SockSite, channel: grpc.aio.Channel, port: int
    ) -> None:
        self.runner = runner
        self.site = site
        self.channel = channel
        self.port = port

    @classmethod
    async def start(
        cls,
        listen: str,
        target: str,
        services: Iterable[ServiceDescriptor],
        max_message_bytes: int,
        metrics: Handler | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> Door:
        """Serve HTTP on `listen` (HTTPS with `tls`), calling the gRPC server at `target` (and
        GET /metrics with `metrics`, when given). StartupError if the address cannot be bound."""
        sock = bind(listen)
        port = int(sock.getsockname()[1])
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        channel = grpc.aio.insecure_channel(target, options=options)
        app = _application([Route(b, channel) for b in bindings(services)], max_message_bytes)
        if metrics is not None:
            app.router.add_get("/metrics", metrics)
        # A client that goes away cancels its handler, and so its gRPC call (a subscription
        # would otherwise notice only at its next heartbeat).
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await runner.setup()
        site = web.SockSite(runner, sock, ssl_context=tls)
        await site.start()
        return cls(runner, site, channel, port)

    async def stop_accepting(self) -> None:
        """Take no new connections; calls under way go on."""
        await self.site.stop()

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.channel.close()


def bind(listen: str) -> socket.socket:
    """A listening TCP socket on HOST:PORT; StartupError if it cannot be had."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, int(port)), family=family, backlog=1024)
    except ValueError:
        raise StartupError(
            f"cannot listen for HTTP on {listen!r}: expected HOST:PORT or off"
        ) from None
    except OSError as e:
        raise StartupError(
            f"cannot listen for HTTP on {listen}: {e.strerror or e} (is the port in use?)"
        ) from e


def _application(routes: list[Route], max_message_bytes: int) -> web.Application:
    app = web.Application(client_max_size=max_message_bytes, middlewares=[_errors])
    for route in routes:
        app.router.add_route(route.binding.verb, route.binding.route, _handler(route))
    docs.add_routes(app)
    return app


def _handler(route: Route) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        options = request[_OPTIONS] = CallOptions.of(request)
        if route.binding.client_streaming:
            return await ndjson.serve(request, route, options)
        if route.binding.server_streaming:
            return await sse.serve(request, route, options)
        return await _unary(request, route, options)

    return handle


async def _unary(request: web.Request, route: Route, options: CallOptions) -> web.Response:
    body = await read_json(request) if route.binding.body else None
    wire = route.assembler.wire(request.match_info, body, request.query.items())
    reply = await route.call(wire, metadata=options.metadata, timeout=options.timeout)
    return web.Response(
        body=route.json(reply),
        content_type="application/json",
        headers={"x-request-id": options.request_id},
    )


async def read_json(request: web.Request) -> Any:
    """The parsed JSON body, or None when there is none."""
    if not request.body_exists:
        return None
    if request.content_type not in _JSON_TYPES:
        raise HttpProblem(
            415,
            f"send the body as application/json, not {request.content_type}",
            "UNSUPPORTED_MEDIA_TYPE",
        )
    raw = await request.read()  # over client_max_size: HTTPRequestEntityTooLarge (413)
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise HttpProblem(400, f"malformed JSON: {e}", "MALFORMED_JSON") from None


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as the JSON error body, with the request id."""
    try:
        return await handler(request)
    except HttpProblem as problem:
        return _problem(request, problem)
    except grpc.aio.AioRpcError as e:
        status, body = rpc_error_body(e)
        return respond(status, body, {**_id_header(request), **retry_headers(e)})
    except web.HTTPException as e:
        if e.status < 400:
            raise
        response = _problem(request, _from_aiohttp(e, request.client_max_size))
        if "Allow" in e.headers:
            response.headers["Allow"] = e.headers["Allow"]
        return response
    except Exception:
        request_id = _id_header(request).get("x-request-id", "-")
        log.exception("http %s %s failed (request id %s)", request.method, request.path, request_id)
        return _problem(request, _internal(request_id))


def _from_aiohttp(e: web.HTTPException, max_bytes: int) -> HttpProblem:
    if e.status == 413:  # RESOURCE_EXHAUSTED is what gRPC says of an oversized message
        return HttpProblem(
            413,
            f"the body is over the limit of {max_bytes} bytes",
            "BODY_TOO_LARGE",
            code=grpc.StatusCode.RESOURCE_EXHAUSTED,
            metadata={"max_bytes": max_bytes},
        )
    reason, code = _HTTP_ERRORS.get(e.status, ("HTTP_ERROR", grpc.StatusCode.INVALID_ARGUMENT))
    return HttpProblem(e.status, e.reason, reason, code=code)


def _internal(request_id: str) -> HttpProblem:
    return HttpProblem(
        500, f"internal error (request id {request_id})", "INTERNAL", code=grpc.StatusCode.INTERNAL
    )


def _problem(request: web.Request, problem: HttpProblem) -> web.Response:
    log.info(
        "http %s %s status=%d reason=%s", request.method, request.path, problem.http_status,
        problem.reason,
    )  # fmt: skip
    return respond(problem.http_status, problem.body(), _id_header(request))


def _id_header(request: web.Request) -> dict[str, str]:
    options = request.get(_OPTIONS)
    return {"x-request-id": options.request_id} if options else {}
