"""Event test fixtures: the stub, a client on the session's Redis, subscriptions read in a thread,
and servers of their own (own database, optionally own Valkey) for outage and multi-server tests.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import redis

from tests.plugins.server import Project, ServerThread, server_settings
from tests.plugins.services import Backends, create_database, drop_database
from zerodb.v1 import event_pb2, event_pb2_grpc
from zerodb_batch.embedded import EmbeddedValkey

T = TypeVar("T")


def stream_key(project_id: str) -> str:
    return f"zerodb:{{{project_id}}}:events"


def xadd_calls(client: redis.Redis) -> int:
    """XADDs Redis ran so far, also those run by the relay's append script. (That script skips
    an event already in the stream instead of sending an XADD that Redis refuses.)"""
    return int(client.info("commandstats").get("cmdstat_xadd", {}).get("calls", 0))


def failed_xadds(client: redis.Redis) -> int:
    """XADDs Redis refused so far."""
    stats = client.info("commandstats").get("cmdstat_xadd", {})
    return int(stats.get("failed_calls", 0))


def make_events(
    count: int, topic: str = "agent.task.done", start: int = 0
) -> list[event_pb2.Event]:
    out = []
    for n in range(start, start + count):
        event = event_pb2.Event(topic=topic)
        event.event_payload.update({"n": n, "agent": "a-1"})
        out.append(event)
    return out


def publish(
    stub: event_pb2_grpc.EventServiceStub,
    project: Project,
    events: list[event_pb2.Event],
    **kw: Any,
) -> event_pb2.BatchPublishEventsResponse:
    request = event_pb2.BatchPublishEventsRequest(project_id=project.id, events=events, **kw)
    return stub.BatchPublishEvents(request, metadata=project.auth)


class Subscription:
    """A SubscribeEvents call read by a thread into a queue, so tests can wait with deadlines."""

    def __init__(self, stub: event_pb2_grpc.EventServiceStub, project: Project, **kw: Any) -> None:
        request = event_pb2.SubscribeEventsRequest(project_id=project.id, **kw)
        self.call = stub.SubscribeEvents(request, metadata=project.auth)
        self.messages: queue.Queue[event_pb2.SubscribeEventsResponse | grpc.RpcError] = (
            queue.Queue()
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for message in self.call:
                self.messages.put(message)
        except grpc.RpcError as e:
            self.messages.put(e)

    def next(self, timeout: float = 20) -> event_pb2.SubscribeEventsResponse:
        try:
            item = self.messages.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no message from SubscribeEvents within {timeout} s")
        if isinstance(item, grpc.RpcError):
            raise item
        return item

    def established(self) -> event_pb2.Heartbeat:
        first = self.next()
        assert first.HasField("heartbeat"), "a subscription starts with a heartbeat"
        return first.heartbeat

    def events(self, count: int, timeout: float = 20) -> list[event_pb2.Event]:
        """The next `count` events, skipping heartbeats."""
        found: list[event_pb2.Event] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            message = self.next(max(0.1, deadline - time.monotonic()))
            if message.HasField("event"):
                found.append(message.event)
        return found

    def error(self, timeout: float = 20) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            while True:
                self.next(timeout)
        return caught.value

    def cancel(self) -> None:
        self.call.cancel()


@pytest.fixture
def events_stub(channel: grpc.Channel) -> event_pb2_grpc.EventServiceStub:
    return event_pb2_grpc.EventServiceStub(channel)


@pytest.fixture(scope="session")
def redis_client(backends: Backends) -> Iterator[redis.Redis]:
    """A plain client on the session's Redis, to check what reached the streams."""
    with redis.Redis.from_url(backends.redis_url, decode_responses=True) as client:
        yield client


@pytest.fixture
def own_database(backends: Backends) -> Iterator[str]:
    """An empty database of this test's own, so no other server's relay touches its events."""
    url = create_database(backends.admin_url, "zerodb_events")
    yield url
    drop_database(backends.admin_url, url)


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    """A Valkey this test may stop and start (its data survives: append-only file)."""
    valkey = EmbeddedValkey(tmp_path / "valkey-data")
    try:
        yield valkey
    finally:
        valkey.stop()


@contextmanager
def own_server(database_url: str, redis_url: str, **overrides: Any) -> Iterator[ServerThread]:
    """A server of the test's own, relaying every 0.2 s unless told otherwise."""
    settings = server_settings(
        database_url, redis_url, **{"event_relay_poll_seconds": 0.2, **overrides}
    )
    running = ServerThread(settings)
    try:
        yield running
    finally:
        running.close()
