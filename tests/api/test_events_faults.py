"""Redis killed (SIGKILL, by pid) during a 10,000-event publish burst and started again, with its
data and without: every accepted event ends in the stream exactly once, in order, and a consumer
group that was reading throughout receives each at least once."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from tests.api.test_events_recovery import scratch_valkey, valkey_pid  # noqa: F401 (fixture)
from tests.api.test_events_subscribe import seconds
from tests.plugins.checks import wait_for
from tests.plugins.events import make_events, own_server, stream_key
from tests.plugins.server import Project
from zerodb.v1 import event_pb2
from zerodb.v1.event_pb2_grpc import EventServiceStub
from zerodb_batch.embedded import EmbeddedValkey

BURST, BATCH = 10_000, 100
KILL_AT = 3_000  # events accepted when Redis is killed
DOWN_FOR = 1.0  # seconds before it is started again


class GroupConsumer(threading.Thread):
    """A consumer of group `burst` as a client would write one: it acknowledges what it got
    (keeping acks that failed for later) and subscribes again whenever the stream ends."""

    def __init__(self, stub: EventServiceStub, project: Project) -> None:
        super().__init__(daemon=True)
        self.stub, self.project = stub, project
        self.received: Counter[str] = Counter()
        self.subscribed = threading.Event()
        self._unacked: list[str] = []
        self._stopping = threading.Event()
        self._call: Any = None  # the open SubscribeEvents call

    def run(self) -> None:
        while not self._stopping.is_set():
            request = event_pb2.SubscribeEventsRequest(
                project_id=self.project.id,
                consumer_group="burst",
                consumer_name="c",
                heartbeat_interval=seconds(1),
                redeliver_after=seconds(2),
            )
            self._call = call = self.stub.SubscribeEvents(request, metadata=self.project.auth)
            try:
                for message in call:
                    self._take(message)
            except grpc.RpcError:
                time.sleep(0.2)  # Redis down, or the group gone with its data: again

    def _take(self, message: event_pb2.SubscribeEventsResponse) -> None:
        if message.HasField("heartbeat"):
            self.subscribed.set()
        else:
            self.received[message.event.id] += 1
            self._unacked.append(message.event.stream_id)
        if len(self._unacked) >= BATCH or message.HasField("heartbeat"):
            self._ack()

    def _ack(self) -> None:
        while self._unacked:
            chunk = self._unacked[:1000]
            request = event_pb2.AckEventsRequest(
                project_id=self.project.id, consumer_group="burst", stream_ids=chunk
            )
            try:
                self.stub.AckEvents(request, metadata=self.project.auth, timeout=5)
            except grpc.RpcError:
                return  # kept: acknowledged on a later try
            del self._unacked[: len(chunk)]

    def stop(self) -> None:
        self._stopping.set()
        if self._call is not None:
            self._call.cancel()
        self.join(10)


def kill_and_restart(valkey: EmbeddedValkey, accepted: list[str], keep_data: bool) -> None:
    """Once KILL_AT events are accepted: SIGKILL Valkey, and after DOWN_FOR start it again,
    with its append-only file or with none."""
    wait_for(lambda: len(accepted) >= KILL_AT, "the burst to reach the kill", timeout=60)
    pid = valkey_pid(valkey)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or not valkey.running(), "the kill")
    if not keep_data:
        shutil.rmtree(valkey.dir / "appendonlydir")
    time.sleep(DOWN_FOR)
    valkey.start()


def publish_burst(stub: EventServiceStub, project: Project, accepted: list[str]) -> int:
    """BURST events in calls of BATCH, each retried under its request_id until answered; the
    accepted ids go to `accepted` as they come; returns how many were answered pending relay."""
    pending = 0
    for b in range(BURST // BATCH):
        request = event_pb2.BatchPublishEventsRequest(
            project_id=project.id,
            events=make_events(BATCH, start=b * BATCH),
            request_id=f"burst-{b}",
        )
        for _ in range(50):
            try:
                reply = stub.BatchPublishEvents(request, metadata=project.auth, timeout=10)
                break
            except grpc.RpcError as e:
                assert e.code() is grpc.StatusCode.UNAVAILABLE, e
                time.sleep(0.1)
        else:
            pytest.fail(f"batch {b} never accepted")
        accepted += reply.ids
        pending += reply.pending_relay
    return pending


def in_stream(url: str, project_id: str) -> list[str]:
    with redis.Redis.from_url(url, decode_responses=True) as client:
        return [f["event_id"] for _, f in client.xrange(stream_key(project_id))]


@pytest.mark.parametrize("keep_data", [True, False], ids=["with-data", "without-data"])
def test_redis_killed_during_a_burst_loses_no_accepted_event(
    own_database: str,
    scratch_valkey: EmbeddedValkey,  # noqa: F811 (the fixture)
    keep_data: bool,
) -> None:
    redis_url = scratch_valkey.start()
    with (
        own_server(own_database, redis_url) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        stub, project = EventServiceStub(channel), Project(*running.new_key())
        consumer = GroupConsumer(stub, project)
        consumer.start()
        try:
            assert consumer.subscribed.wait(20), "the group consumer never subscribed"
            accepted: list[str] = []
            killer = threading.Thread(
                target=kill_and_restart, args=(scratch_valkey, accepted, keep_data)
            )
            killer.start()
            pending = publish_burst(stub, project, accepted)
            killer.join(60)
            ids = accepted
            wait_for(lambda: len(in_stream(redis_url, project.id)) >= BURST, "the relay", 40)
            stream = in_stream(redis_url, project.id)
            assert stream == ids  # every accepted event once, in publish order
            wait_for(lambda: consumer.received.keys() >= set(ids), "the group to get all", 40)
        finally:
            consumer.stop()
        deliveries = sum(consumer.received.values())
        print(  # the figures in the README's "What we guarantee"
            f"\nredis killed {'with' if keep_data else 'without'} data: accepted {len(ids)},"
            f" answered pending relay {pending}, in stream {len(stream)} (distinct"
            f" {len(set(stream))}), lost 0; group got {len(consumer.received)} distinct in"
            f" {deliveries} deliveries ({deliveries - len(consumer.received)} again)"
        )
