"""Server-streaming RPCs as Server-Sent Events (`text/event-stream`).

The request comes in the query string (a GET rule). Each response message is one SSE event:
`event:` names the member set in the message's oneof (`event`, `heartbeat`; `message` for a
message without one), `data:` is that member as JSON, and `id:` is its `stream_id` (a heartbeat's
`last_stream_id`). A reconnecting client sends `Last-Event-ID`, which sets the request's
`start_after_stream_id`: the stream resumes right after the last event it saw. An error before
the first message is an ordinary JSON error response; a later one (the server shutting down, Redis
going away) is a final `event: error` with the same body, then the stream ends.
"""

from __future__ import annotations

from typing import Any

import grpc
import orjson
from aiohttp import web
from google.protobuf.message import Message

from zerodb_batch.http.calls import CallOptions, Route
from zerodb_batch.http.jsonpb import Encoder
from zerodb_batch.http.problems import rpc_error_body

_ID_FIELDS = ("stream_id", "last_stream_id")
RESUME_FIELD = "start_after_stream_id"
_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # proxies must not hold events back
}
_encoders: dict[str, Encoder] = {}


async def serve(request: web.Request, route: Route, options: CallOptions) -> web.StreamResponse:
    message = route.assembler.build(request.match_info, None, request.query.items())
    last_seen = request.headers.get("Last-Event-ID", "").strip()
    if last_seen and RESUME_FIELD in message.DESCRIPTOR.fields_by_name:
        setattr(message, RESUME_FIELD, last_seen)  # replaces any other start of the oneof
    wire = route.assembler.serialize(message)
    call = route.call(wire, metadata=options.metadata, timeout=options.timeout)
    try:
        reply = await call.read()  # an error here is a plain JSON error response
        response = web.StreamResponse(headers={**_HEADERS, "x-request-id": options.request_id})
        await response.prepare(request)
        await _relay(call, reply, route, response)
        return response
    finally:
        call.cancel()


async def _relay(call: Any, reply: Any, route: Route, response: web.StreamResponse) -> None:
    try:
        try:
            while reply is not grpc.aio.EOF:
                await response.write(frame(route.output.FromString(reply)))
                reply = await call.read()
        except grpc.aio.AioRpcError as e:
            _, body = rpc_error_body(e)
            await response.write(b"event: error\ndata: " + orjson.dumps(body) + b"\n\n")
    except ConnectionError:
        pass  # the client went away; the call is cancelled on the way out


def frame(message: Message) -> bytes:
    """One SSE event for one response message."""
    name, part = "message", message
    oneofs = message.DESCRIPTOR.oneofs
    if len(oneofs) == 1 and (which := message.WhichOneof(oneofs[0].name)):
        name, part = which, getattr(message, which)
    data = _encoder(part)(part)
    head = f"event: {name}\n"
    stream_id = next((data[f] for f in _ID_FIELDS if data.get(f)), None)
    if isinstance(stream_id, str):
        head = f"id: {stream_id}\n" + head
    return head.encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def _encoder(message: Message) -> Encoder:
    name = message.DESCRIPTOR.full_name
    found = _encoders.get(name)
    if found is None:
        found = _encoders[name] = Encoder(message.DESCRIPTOR)  # type: ignore[arg-type]
    return found
