"""Traces through the real OpenTelemetry SDK (its in-memory exporter, in a server process of its
own): each RPC is a server span continuing the caller's `traceparent`, over gRPC and over HTTP,
with its SQL statements, a streamed load's chunks and the XADD pipelines as children."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import requests

from tests.api.test_memory_stream import chunk
from tests.plugins.events import make_events
from tests.plugins.server import Project
from tests.plugins.services import Backends
from zerodb.v1 import event_pb2, memory_pb2
from zerodb.v1.event_pb2_grpc import EventServiceStub
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub

Span = dict[str, Any]


@dataclass(frozen=True)
class Caller:
    """A caller's own span, sent as `traceparent`."""

    trace_id: str
    span_id: str

    @classmethod
    def new(cls) -> Caller:
        return cls(secrets.token_hex(16), secrets.token_hex(8))

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"


@dataclass
class TracedServer:
    proc: subprocess.Popen[str]
    address: str
    http: str
    project: Project

    def spans(self) -> list[Span]:
        """Stop the server and read every span it finished."""
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err[-3000:]
        return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def traced(own_database: str, backends: Backends) -> Iterator[TracedServer]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.observability.traced_server", own_database,
         backends.redis_url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        assert ready and ready[0] == "ready", proc.stderr.read() if proc.stderr else ""
        yield TracedServer(proc, ready[1], ready[2], Project(ready[3], ready[4]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def children(spans: list[Span], parent: Span) -> list[Span]:
    return [s for s in spans if s["parent_id"] == parent["span_id"]]


def server_span(spans: list[Span], caller: Caller, method: str) -> Span:
    (found,) = [s for s in spans if s["kind"] == "SERVER" and s["trace_id"] == caller.trace_id]
    assert found["name"] == f"zerodb.v1.{method}"
    assert found["parent_id"] == caller.span_id, "the caller's span is the parent"
    return found


def is_sql(span: Span) -> bool:
    return span["attributes"].get("db.system", span["attributes"].get("db.system.name")) == (
        "postgresql"
    )


def test_spans_continue_the_callers_trace_with_sql_chunks_and_xadds(traced: TracedServer) -> None:
    upsert, http, load, events, ack = (Caller.new() for _ in range(5))
    project = traced.project
    with grpc.insecure_channel(traced.address) as channel:
        memories = MemoryServiceStub(channel)
        request = memory_pb2.BatchUpsertMemoriesRequest(
            project_id=project.id, records=[memory_pb2.Memory(content="traced")] * 3
        )
        memories.BatchUpsertMemories(
            request, metadata=(*project.auth, ("traceparent", upsert.traceparent))
        )
        memories.StreamUpsertMemories(
            iter([chunk(project, 0), chunk(project, 1)]),
            metadata=(*project.auth, ("traceparent", load.traceparent)),
        )
        EventServiceStub(channel).BatchPublishEvents(
            event_pb2.BatchPublishEventsRequest(project_id=project.id, events=make_events(3)),
            metadata=(*project.auth, ("traceparent", events.traceparent)),
        )
        EventServiceStub(channel).AckEvents(
            event_pb2.AckEventsRequest(
                project_id=project.id, consumer_group="g", stream_ids=["1-1"]
            ),
            metadata=(*project.auth, ("traceparent", ack.traceparent)),
        )
    reply = requests.post(
        f"{traced.http}/api/v1/projects/{project.id}/database/memory/batch/upsert",
        json={"records": [{"content": "over HTTP"}]},
        headers={"x-api-key": project.key, "traceparent": http.traceparent},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    spans = traced.spans()

    rpc = server_span(spans, upsert, "MemoryService/BatchUpsertMemories")
    assert rpc["attributes"]["rpc.grpc.status_code"] == "0"
    sql = [s for s in children(spans, rpc) if is_sql(s)]
    assert sql, "the upsert's statements are children of its span"
    assert all(s["trace_id"] == upsert.trace_id for s in sql)

    over_http = server_span(spans, http, "MemoryService/BatchUpsertMemories")
    assert any(is_sql(s) for s in children(spans, over_http))

    streamed = server_span(spans, load, "MemoryService/StreamUpsertMemories")
    chunks = [s for s in children(spans, streamed) if s["name"] == "load chunk"]
    assert sorted(c["attributes"]["zerodb.load.offset"] for c in chunks) == ["0", "1"]
    assert all(any(is_sql(s) for s in children(spans, c)) for c in chunks)

    published = server_span(spans, events, "EventService/BatchPublishEvents")
    (xadd,) = [s for s in children(spans, published) if s["name"] == "XADD"]
    assert xadd["attributes"]["zerodb.events"] == "3"

    acked = server_span(spans, ack, "EventService/AckEvents")
    redis = [s for s in children(spans, acked) if s["attributes"].get("db.system") == "redis"]
    assert [s["name"] for s in redis] == ["XACK"], "redis-py's commands are children too"

    # The relay's polls and the health probes ran SQL all along, outside any call: no traces.
    roots = [s for s in spans if s["parent_id"] is None]
    assert roots == [], f"spans outside a caller's trace: {[s['name'] for s in roots]}"
