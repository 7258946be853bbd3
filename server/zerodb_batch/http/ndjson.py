"""Client-streaming RPCs from an NDJSON body: one request message per line, one JSON answer.

POST with `Content-Type: application/x-ndjson` (or `application/jsonl`); each non-empty line is
one message of the stream in its JSON form (path variables fill their fields on every line).
Lines go to the call as they arrive, so memory stays bounded whatever the body's length; one line
is at most ZERODB_MAX_MESSAGE_BYTES. The answer is the stream's final response. A bad line (400,
naming the line) or a body cut short cancels the call, never ends it cleanly, so a load stays
resumable: chunks the server had not committed yet are dropped, and `GetLoad` says where to
resend from (`next_offset`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from zerodb_batch.domain import wire
from zerodb_batch.http.calls import CallOptions, Route
from zerodb_batch.http.problems import HttpProblem

NDJSON_TYPES = ("application/x-ndjson", "application/jsonl")
# What reading a body raises when the client's connection ends before the body does.
_CUT = (aiohttp.ClientPayloadError, aiohttp.http_exceptions.HttpProcessingError, ConnectionError)


async def serve(request: web.Request, route: Route, options: CallOptions) -> web.Response:
    if request.content_type not in NDJSON_TYPES:
        raise HttpProblem(
            415,
            f"send the stream as application/x-ndjson (one JSON message a line), "
            f"not {request.content_type}",
            "UNSUPPORTED_MEDIA_TYPE",
        )
    call = route.call(metadata=options.metadata, timeout=options.timeout)
    pump = asyncio.create_task(_pump(request, route, call))
    answer = asyncio.ensure_future(_answer(call))
    answered = False
    try:
        await asyncio.wait({pump, answer}, return_when=asyncio.FIRST_COMPLETED)
        if pump.done() and pump.exception() is not None:
            raise pump.exception()  # type: ignore[misc]
        reply = await answer
        answered = True
    finally:
        if not answered:  # a bad line, a cut body, a client gone: never a clean end
            call.cancel()  # first: cancelling the tasks alone let a cut load end as DONE
        for task in (pump, answer):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    return web.Response(
        body=route.json(reply),
        content_type="application/json",
        headers={"x-request-id": options.request_id},
    )


async def _answer(call: Any) -> bytes:
    return await call  # type: ignore[no-any-return]


async def _pump(request: web.Request, route: Route, call: Any) -> None:
    """Each line's message to the call, one held back: once the body has ended cleanly, the last
    goes out marked `final`, so the load is done with its last chunk, not by a guess at the
    stream's close."""
    number, held = 0, None
    async for line in _lines(request.content, request.client_max_size):
        number += 1
        if line.strip():
            if held is not None:
                await call.write(held)
            held = _message(route, request, line, number)
    if held is not None:  # `final: true` appended: the line is not decoded and encoded again
        final = route.binding.method.input_type.fields_by_name["final"].number
        await call.write(held + wire.true_field(final))
    await call.done_writing()


def _message(route: Route, request: web.Request, line: bytes, number: int) -> bytes:
    try:
        data = orjson.loads(line)
        return route.assembler.wire(request.match_info, data)
    except orjson.JSONDecodeError as e:
        raise _on_line(HttpProblem(400, f"malformed JSON: {e}", "MALFORMED_JSON"), number) from None
    except HttpProblem as problem:
        raise _on_line(problem, number) from None


def _on_line(problem: HttpProblem, number: int) -> HttpProblem:
    problem.message = f"line {number}: {problem.message}"
    problem.metadata["line"] = str(number)
    return problem


async def _lines(content: aiohttp.StreamReader, limit: int) -> AsyncIterator[bytes]:
    """The body's lines as they arrive; HttpProblem if one is too long or the body is cut."""
    buffer = bytearray()
    try:
        async for chunk in content.iter_any():
            buffer += chunk
            start = 0
            while (end := buffer.find(b"\n", start)) >= 0:
                yield bytes(buffer[start:end])
                start = end + 1
            del buffer[:start]
            if len(buffer) > limit:
                raise HttpProblem(
                    413,
                    f"a line is over the limit of {limit} bytes",
                    "LINE_TOO_LARGE",
                    metadata={"max_bytes": limit},
                )
    except _CUT:
        raise HttpProblem(400, "the body ended before it was complete", "BODY_INCOMPLETE") from None
    if buffer:
        yield bytes(buffer)
