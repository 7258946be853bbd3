"""Events when a dependency goes away, and with several servers relaying from one database."""

from __future__ import annotations

import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psycopg
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.plugins.checks import details, outage_database, wait_for
from tests.plugins.events import (
    Subscription,
    failed_xadds,
    make_events,
    own_server,
    publish,
    stream_key,
    xadd_calls,
)
from tests.plugins.metrics import Scrape, scrape_until
from tests.plugins.serve import Serve, serve_env
from tests.plugins.server import Project
from tests.plugins.services import Backends
from zerodb.v1 import event_pb2
from zerodb.v1.event_pb2_grpc import EventServiceStub
from zerodb_batch.embedded import EmbeddedValkey
from zerodb_batch.storage.migrate import migrate
from zerodb_batch.storage.queries import Q


def in_stream(client: redis.Redis, project_id: str) -> list[str]:
    return [f["event_id"] for _, f in client.xrange(stream_key(project_id))]


def in_postgres(url: str, project_id: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id::text FROM events WHERE project_id = %s ORDER BY seq", (project_id,)
        ).fetchall()
    return [str(r[0]) for r in rows]


def test_redis_down_publish_succeeds_and_every_event_arrives_once_when_it_is_back(
    own_database: str, own_valkey: EmbeddedValkey
) -> None:
    redis_url = own_valkey.start()
    with (
        own_server(own_database, redis_url) as running,
        grpc.insecure_channel(running.address) as channel,
        redis.Redis.from_url(redis_url, decode_responses=True) as client,
    ):
        stub, project = EventServiceStub(channel), Project(*running.new_key())
        before = publish(stub, project, make_events(2))
        live = Subscription(stub, project, start_after_stream_id="0")
        live.established()
        live.events(2)

        own_valkey.stop()
        assert live.error().code() is grpc.StatusCode.UNAVAILABLE
        during = [publish(stub, project, make_events(10, start=10 * k)) for k in range(3)]
        assert [(r.published, r.pending_relay) for r in during] == [(10, 10)] * 3
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        unavailable(Subscription(stub, project).error())
        with pytest.raises(grpc.RpcError) as caught:
            ack = event_pb2.AckEventsRequest(
                project_id=project.id, consumer_group="g", stream_ids=["1-1"]
            )
            stub.AckEvents(ack, metadata=project.auth)
        unavailable(caught.value)

        own_valkey.start()  # same socket, same data
        expected = [*before.ids, *(i for r in during for i in r.ids)]
        wait_for(lambda: len(in_stream(client, project.id)) >= 32, "the relay after the outage")
        assert in_stream(client, project.id) == expected  # each once, in publish order
        after = publish(stub, project, make_events(1))
        assert after.pending_relay == 0
        resumed = Subscription(stub, project, start_after_stream_id=live_position(client, project))
        try:
            resumed.established()
            assert [e.id for e in resumed.events(31)] == [*expected[2:], *after.ids]
        finally:
            resumed.cancel()


def unavailable(error: grpc.RpcError) -> None:
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert details(error)[0].reason == "DEPENDENCY_UNAVAILABLE"


def live_position(client: redis.Redis, project: Project) -> str:
    """The stream id of the project's second event: where the live subscriber had got to."""
    return str(client.xrange(stream_key(project.id), count=2)[1][0])


def test_postgres_down_publish_is_unavailable_and_nothing_reaches_redis(
    backends: Backends, redis_client: redis.Redis
) -> None:
    # A long auth cache, so that calls get past authentication to the events themselves.
    with (
        outage_database(backends) as down,
        own_server(down.url, backends.redis_url, auth_cache_seconds=60, pool_timeout=1) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        stub, project = EventServiceStub(channel), Project(*running.new_key())
        assert publish(stub, project, make_events(1)).published == 1
        down.allow(False)
        for call in (
            lambda: publish(stub, project, make_events(5)),
            lambda: stub.ListEvents(
                event_pb2.ListEventsRequest(project_id=project.id), metadata=project.auth
            ),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
            assert details(caught.value)[0].reason == "DEPENDENCY_UNAVAILABLE"
        assert redis_client.xlen(stream_key(project.id)) == 1


def test_two_server_processes_relay_each_event_once(
    own_database: str, own_valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    # A Valkey of the test's own: its XADD counter counts these servers' XADDs only.
    redis_url = own_valkey.start()
    redis_client = redis.Redis.from_url(redis_url, decode_responses=True)
    env = {
        "ZERODB_DATABASE_URL": own_database,
        "ZERODB_REDIS_URL": redis_url,
        "ZERODB_EVENT_RELAY_POLL_SECONDS": "0.1",
    }
    first = Serve(serve_env(tmp_path / "a", "127.0.0.1:0", **env))
    servers = [first]
    try:
        addresses = [first.wait_for(r"serving on (\S+)")[1]]
        project = Project(
            first.wait_for(r"project_id: (\S+)")[1], first.wait_for(r"api_key: (\S+)")[1]
        )
        second = Serve(serve_env(tmp_path / "b", "127.0.0.1:0", **env))
        servers.append(second)
        addresses.append(second.wait_for(r"serving on (\S+)")[1])
        sent = xadd_calls(redis_client)

        publish_through_both(addresses, project)
        leave_for_the_relay(own_database, project.id)  # as if publishers died after commit

        wait_for(lambda: len(in_stream(redis_client, project.id)) >= 500, "both relays")
        committed = in_postgres(own_database, project.id)
        assert len(committed) == 500
        assert in_stream(redis_client, project.id) == committed  # each once, in seq order
        assert xadd_calls(redis_client) - sent == 500  # no event was appended twice
    finally:
        for serve in servers:
            serve.stop()
        redis_client.close()


def publish_through_both(addresses: list[str], project: Project) -> None:
    """Two publishers on each server, all to one project, at the same time."""

    def publisher(address: str, k: int) -> list[int]:
        with grpc.insecure_channel(address) as channel:
            stub = EventServiceStub(channel)
            return [
                publish(stub, project, make_events(20, start=100 * k + 20 * b)).pending_relay
                for b in range(5)
            ]

    with ThreadPoolExecutor(4) as threads:
        calls = [
            threads.submit(publisher, address, 2 * n + j)
            for n, address in enumerate(addresses)
            for j in range(2)
        ]
        # Checked here, in the test's thread: a failed assert in a thread fails nothing.
        assert [c.result(timeout=60) for c in calls] == [[0] * 5] * 4


def leave_for_the_relay(database_url: str, project_id: str) -> None:
    """Commit 100 events in 10 transactions without relaying them, then NOTIFY once."""
    payloads = [json.dumps({"n": n}) for n in range(10)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        for _ in range(10):
            conn.execute(
                Q["event_insert"],
                {
                    "project_id": project_id,
                    "count": 10,
                    "topics": ["left"] * 10,
                    "payloads": payloads,
                },
            )
        conn.execute(Q["event_notify"], {"project_id": project_id})


def test_events_appended_before_a_crash_are_not_appended_again(
    own_database: str, own_valkey: EmbeddedValkey
) -> None:
    """A relayer died after XADD but before its mark committed: the next relay skips those."""
    redis_url = own_valkey.start()  # its own: no other server's XADDs in the refused count
    with redis.Redis.from_url(redis_url, decode_responses=True) as redis_client:
        crash_after_xadd(own_database, redis_url, redis_client)


def crash_after_xadd(own_database: str, redis_url: str, redis_client: redis.Redis) -> None:
    project_id = f"p-{uuid.uuid4()}"
    asyncio.run(migrate_database(own_database))
    leave_for_the_relay(own_database, project_id)
    with psycopg.connect(own_database) as conn:
        rows = conn.execute(
            "SELECT id::text, topic, payload::text, publish_time, seq FROM events"
            " WHERE project_id = %s ORDER BY seq LIMIT 40",
            (project_id,),
        ).fetchall()
    for event_id, topic, payload, when, seq in rows:
        ms = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)  # type: ignore[operator]
        redis_client.xadd(
            stream_key(project_id),
            {"event_id": event_id, "topic": topic, "payload": payload, "published_at": "x"},
            id=f"{ms}-{seq}",
        )
    before = xadd_calls(redis_client)

    with own_server(own_database, redis_url) as running:  # its relay loop finds the 100 pending
        wait_for(lambda: len(in_stream(redis_client, project_id)) >= 100, "the relay")
        # Counted after the mark commits, a moment after the entries are in.
        metrics = scrape_until(running.http or "", "the loop's count", _relayed_by_loop)
    assert in_stream(redis_client, project_id) == in_postgres(own_database, project_id)
    # The append skipped the 40 already in the stream: it XADDed only the other 60, and the
    # relay counts those it appended.
    assert xadd_calls(redis_client) - before == 60
    assert metrics.value("zerodb_event_relayed_total", path="loop") == 60
    assert failed_xadds(redis_client) == 0


def _relayed_by_loop(metrics: Scrape) -> bool:
    return metrics.value("zerodb_event_relayed_total", path="loop") >= 60


async def migrate_database(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)
