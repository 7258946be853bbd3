"""Events through a Redis that is killed, hangs, or refuses one project; and a server stopping."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from tests.api.test_events_outage import leave_for_the_relay, migrate_database
from tests.plugins.checks import wait_for
from tests.plugins.events import (
    Subscription,
    make_events,
    own_server,
    publish,
    stream_key,
)
from tests.plugins.server import Project
from tests.plugins.services import Backends, scratch_dir
from zerodb.v1.event_pb2 import BatchPublishEventsRequest
from zerodb.v1.event_pb2_grpc import EventServiceStub
from zerodb_batch.embedded import EmbeddedValkey


@pytest.fixture
def scratch_valkey() -> Iterator[EmbeddedValkey]:
    """A Valkey in a scratch dir of the test's own, to kill, hang and restart."""
    with scratch_dir() as path:
        valkey = EmbeddedValkey(path)
        try:
            yield valkey
        finally:
            valkey.stop()


def stream_ids(url: str, project_id: str) -> list[str]:
    """Event ids in the stream, on a fresh connection (Redis may have restarted)."""
    with redis.Redis.from_url(url, decode_responses=True) as client:
        return [f["event_id"] for _, f in client.xrange(stream_key(project_id))]


def valkey_pid(valkey: EmbeddedValkey) -> int:
    return int(valkey.pid_path.read_text().strip())


def kill_and_lose_the_tail(valkey: EmbeddedValkey, first_lost: str) -> None:
    """SIGKILL, then cut the append-only file before the XADD of `first_lost` (an entry id):
    what a machine crash does to writes that `appendfsync everysec` had not synced yet."""
    pid = valkey_pid(valkey)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or valkey.running() is False, "the kill")
    [incr] = (valkey.dir / "appendonlydir").glob("*.incr.aof")
    data = incr.read_bytes()
    cut = data.rfind(b"\r\n*", 0, data.index(first_lost.encode())) + 2
    assert cut > 2, "the entry is not in the append-only file"
    incr.write_bytes(data[:cut])


def test_events_a_killed_redis_lost_are_appended_again(
    own_database: str, scratch_valkey: EmbeddedValkey
) -> None:
    """Redis restarts without the last entries of a stream (killed before its append-only file
    was synced): in the end every accepted event is in the stream exactly once, in publish order.
    The relay may repair the stream before the test could look at the hole, so only that outcome
    is checked; the hole itself is certain, cut from the file by the test."""
    redis_url = scratch_valkey.start()
    with (
        own_server(own_database, redis_url) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        stub, project = EventServiceStub(channel), Project(*running.new_key())
        ids = [
            i for k in range(3) for i in publish(stub, project, make_events(10, start=10 * k)).ids
        ]
        wait_for(lambda: stream_ids(redis_url, project.id) == ids, "the events in the stream")
        with redis.Redis.from_url(redis_url, decode_responses=True) as client:
            first_lost = client.xrange(stream_key(project.id))[20][0]

        kill_and_lose_the_tail(scratch_valkey, first_lost)
        scratch_valkey.start()
        wait_for(lambda: stream_ids(redis_url, project.id) == ids, "every event once, in order")


def test_publishers_do_not_wait_on_a_redis_that_stopped_answering(
    own_database: str, scratch_valkey: EmbeddedValkey
) -> None:
    """Redis hangs (SIGSTOP): the first publisher finds out the hard way (the socket timeout);
    the next ones answer at once with their events pending, until the relay reaches Redis."""
    redis_url = scratch_valkey.start()
    with (
        own_server(own_database, redis_url) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        stub, project = EventServiceStub(channel), Project(*running.new_key())
        ids = list(publish(stub, project, make_events(1)).ids)
        pid = valkey_pid(scratch_valkey)
        os.kill(pid, signal.SIGSTOP)
        try:
            first = publish(stub, project, make_events(1, start=1))
            assert first.pending_relay == 1
            ids += first.ids
            for n in range(2, 5):
                # Well below the 5 s Redis socket timeout that a publisher would wait out.
                request = BatchPublishEventsRequest(
                    project_id=project.id, events=make_events(1, start=n)
                )
                reply = stub.BatchPublishEvents(request, metadata=project.auth, timeout=3)
                assert reply.pending_relay == 1
                ids += reply.ids
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_for(lambda: stream_ids(redis_url, project.id) == ids, "the relay once Redis answers")
        assert publish(stub, project, make_events(1, start=5)).pending_relay == 0


def test_a_project_redis_refuses_does_not_stop_the_relay_of_others(
    own_database: str, backends: Backends, redis_client: redis.Redis
) -> None:
    asyncio.run(migrate_database(own_database))
    refused = [f"p-refused-{uuid.uuid4()}" for _ in range(6)]
    good = f"p-good-{uuid.uuid4()}"
    try:
        for project_id in refused:
            redis_client.set(stream_key(project_id), "not a stream")  # every XADD fails
            leave_for_the_relay(own_database, project_id)
        leave_for_the_relay(own_database, good)
        with own_server(own_database, backends.redis_url):
            wait_for(lambda: redis_client.xlen(stream_key(good)) == 100, "the good project")
    finally:
        redis_client.delete(*(stream_key(p) for p in [*refused, good]))


def test_stop_ends_open_subscriptions_with_unavailable(
    own_database: str, backends: Backends
) -> None:
    """A drain would wait out its whole grace for a subscription, which never ends by itself."""
    with (
        own_server(own_database, backends.redis_url) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        stub, project = EventServiceStub(channel), Project(*running.new_key())
        sub = Subscription(stub, project)
        sub.established()
        stopping = asyncio.run_coroutine_threadsafe(running.app.stop(grace=60), running.loop)
        error = sub.error(timeout=20)  # well inside the grace
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (error.details() or "")
        stopping.result(timeout=30)


def test_subscriptions_per_server_are_capped(own_database: str, backends: Backends) -> None:
    with (
        own_server(own_database, backends.redis_url, max_subscriptions=2) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        stub, project = EventServiceStub(channel), Project(*running.new_key())
        open_ = [Subscription(stub, project) for _ in range(2)]
        try:
            for sub in open_:
                sub.established()
            assert Subscription(stub, project).error().code() is (
                grpc.StatusCode.RESOURCE_EXHAUSTED
            )
            open_[0].cancel()

            def admitted() -> bool:
                attempt = Subscription(stub, project)
                try:
                    return attempt.next().HasField("heartbeat")
                except grpc.RpcError:
                    return False
                finally:
                    attempt.cancel()

            wait_for(admitted, "a place freed by the cancelled subscription")
        finally:
            for sub in open_:
                sub.cancel()
