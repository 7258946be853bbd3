"""Streaming over HTTP: SubscribeEvents as Server-Sent Events, loads as an NDJSON body."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.plugins.checks import wait_for
from tests.plugins.http import Door, SseEvent, error_of, sse_events

LOAD = "/memory/stream/upsert"
NDJSON = {"content-type": "application/x-ndjson"}


def publish(door: Door, *topics: str) -> list[str]:
    events = [{"topic": t, "event_payload": {"n": i}} for i, t in enumerate(topics)]
    reply = door.post("/events/batch", {"events": events})
    assert reply.status_code == 200, reply.text
    ids: list[str] = reply.json()["ids"]
    return ids


def subscribe(door: Door, last_event_id: str | None = None, **query: str) -> requests.Response:
    headers = {**door.headers, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    reply = requests.get(
        door.base + "/events/stream", params=query, headers=headers, stream=True, timeout=30
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "text/event-stream"
    return reply


def events_only(stream: Iterator[SseEvent], count: int) -> list[SseEvent]:
    got = []
    for event in stream:
        if event.event == "event":
            got.append(event)
            if len(got) == count:
                return got
    raise AssertionError(f"the stream ended after {len(got)} of {count} events")


def test_sse_delivers_and_resumes_after_last_event_id(door: Door) -> None:
    ids = publish(door, "agent.task.started", "other.thing", "agent.task.done", "agent.task.x")
    with subscribe(door, topics="agent.task.*", start_after_stream_id="0") as reply:
        stream = sse_events(reply)
        first = next(stream)
        assert first.event == "heartbeat"  # sent once the subscription is established
        got = events_only(stream, 2)
    payloads = [json.loads(e.data[0]) for e in got]
    assert [p["id"] for p in payloads] == [ids[0], ids[2]]  # "other.thing" filtered out
    assert [e.id for e in got] == [p["stream_id"] for p in payloads]  # SSE ids are stream ids

    # A reconnecting EventSource sends the last id it saw: delivery continues after it.
    with subscribe(door, last_event_id=got[0].id, topics="agent.task.*") as reply:
        resumed = events_only(sse_events(reply), 2)
    assert [json.loads(e.data[0])["id"] for e in resumed] == [ids[2], ids[3]]


def test_sse_live_events_and_heartbeat_ids(door: Door) -> None:
    publish(door, "agent.old")
    with subscribe(door, topics="agent.*", heartbeat_interval="1s") as reply:
        stream = sse_events(reply)
        assert next(stream).event == "heartbeat"
        [new] = publish(door, "agent.new")
        event = events_only(stream, 1)[0]
        assert json.loads(event.data[0])["id"] == new
        beat = next(stream)
    assert beat.event == "heartbeat" and beat.id == event.id  # resume point: the last entry seen
    assert json.loads(beat.data[0])["last_stream_id"] == event.id


def test_sse_errors_before_the_stream_are_json(door: Door) -> None:
    reply = requests.get(door.base + "/events/stream", timeout=30)
    error_of(reply, 401, "UNAUTHENTICATED")
    error = error_of(door.get("/events/stream", topics="bad topic!"), 400, "INVALID_ARGUMENT")
    assert error["by_type"]["BadRequest"]["field_violations"][0]["field"].startswith("topics")


def chunks(load_id: str, count: int, size: int) -> list[str]:
    return [
        json.dumps(
            {"load_id": load_id, "offset": n,
             "records": [{"content": f"{n}/{i}", "tags": [load_id]} for i in range(size)]}
        )
        for n in range(count)
    ]  # fmt: skip


def load(door: Door, lines: list[str]) -> requests.Response:
    body = "\n".join(lines) + "\n"
    return requests.post(
        door.base + LOAD, data=body, headers={**door.headers, **NDJSON}, timeout=120
    )


def test_ndjson_load(door: Door) -> None:
    reply = load(door, chunks("plain", 3, 100))
    assert reply.status_code == 200, reply.text
    done = reply.json()
    assert (done["chunks_committed"], done["load"]["inserted"]) == ("3", "300")
    assert done["load"]["state"] == "LOAD_STATE_DONE"


def cut_upload(door: Door, load_id: str, lines: list[str], whole: int, rest: str) -> None:
    """Send `whole` lines of a chunked body, wait for the server to commit all but the last
    (the door holds a line back until the next arrives or the body ends), send `rest` and drop
    the connection without the body's end."""
    url = urlsplit(door.base + LOAD)
    with socket.create_connection((url.hostname, url.port)) as sock:
        head = (
            f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nx-api-key: {door.project.key}"
            "\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(head.encode() + _chunk("\n".join(lines[:whole]) + "\n"))
        wait_for(
            lambda: (p := get_load(door, load_id)) and p["next_offset"] == str(whole - 1),
            f"the first {whole - 1} chunks to commit",
        )
        if rest:
            sock.sendall(_chunk(rest))
        sock.shutdown(socket.SHUT_RDWR)


def _chunk(text: str) -> bytes:
    data = text.encode()
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def get_load(door: Door, load_id: str) -> dict[str, Any] | None:
    reply = door.get(f"/loads/{load_id}")
    return reply.json()["load"] if reply.status_code == 200 else None


@pytest.mark.parametrize("rest", ["half a line", "", "\n"])
def test_ndjson_load_cut_then_resumed(
    door: Door, rest: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A body cut short (mid-line, or between lines without the chunked end) is no clean end:
    the door cancels the call (never half-closes it), the load stays RUNNING with every
    committed chunk, and resumes where it stopped."""
    caplog.set_level(logging.INFO, logger="zerodb_batch.rpc")
    load_id = f"cut-{len(rest)}"
    lines = chunks(load_id, 8, 50)
    cut_upload(door, load_id, lines, 5, rest)
    ended = wait_for(
        lambda: [
            r.getMessage() for r in caplog.records if "StreamUpsertMemories" in r.getMessage()
        ],
        "the cut stream to end",
    )
    assert "code=CANCELLED" in ended[0]
    progress = get_load(door, load_id)
    assert progress is not None
    # The fifth line, held back, went nowhere: a cut body sends no line it cannot mark final.
    assert (progress["next_offset"], progress["state"]) == ("4", "LOAD_STATE_RUNNING")

    resumed = load(door, lines)  # resend everything: committed chunks are skipped
    assert resumed.status_code == 200, resumed.text
    done = resumed.json()
    assert (done["chunks_skipped"], done["chunks_committed"]) == ("4", "4")
    assert (done["load"]["inserted"], done["load"]["state"]) == ("400", "LOAD_STATE_DONE")
    listed = door.get("/memory", tags=load_id, page_size="1000").json()["memories"]
    assert len(listed) == 400


def test_ndjson_a_line_after_a_final_one_is_refused(door: Door) -> None:
    first, second = chunks("after-final", 2, 3)
    marked = json.dumps({**json.loads(first), "final": True})
    error = error_of(load(door, [marked, second]), 400, "INVALID_ARGUMENT")
    assert error["message"] == "chunk 1 of load 'after-final' follows chunk 0, marked final"
    progress = get_load(door, "after-final")  # the final chunk is in, and the load complete
    assert progress is not None
    assert (progress["last_offset"], progress["state"]) == ("0", "LOAD_STATE_DONE")


def test_ndjson_bad_line_names_it_and_the_load_resumes(door: Door) -> None:
    lines = chunks("bad", 2, 10)
    reply = load(door, [lines[0], '{"load_id": "bad", "offset": 1, "records": [{"colour": 1}]}'])
    error = error_of(reply, 400, "INVALID_ARGUMENT")
    assert error["message"].startswith("line 2: unknown field")
    assert error["by_type"]["ErrorInfo"]["metadata"]["line"] == "2"
    # The call was cancelled: the first chunk may or may not have committed; GetLoad says.
    progress = get_load(door, "bad")
    start = int(progress["next_offset"]) if progress else 0
    assert not progress or progress["state"] == "LOAD_STATE_RUNNING"
    done = load(door, lines[start:]).json()
    assert (done["load"]["inserted"], done["load"]["state"]) == ("20", "LOAD_STATE_DONE")


def test_ndjson_needs_its_content_type(door: Door) -> None:
    reply = requests.post(
        door.base + LOAD, data=chunks("x", 1, 1)[0], headers=door.headers, timeout=30
    )
    error_of(reply, 415, "INVALID_ARGUMENT")
