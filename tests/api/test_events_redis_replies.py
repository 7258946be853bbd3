"""Redis replies of a server in transition (a replica that cannot take writes, or has lost its
master) are UNAVAILABLE, retryable, never a refusal or INTERNAL; and the stream works again once
Redis does."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import redis

from tests.plugins.checks import details
from tests.plugins.events import Subscription, make_events, own_server, publish
from tests.plugins.serve import free_port
from tests.plugins.server import Project, ServerThread
from zerodb.v1.event_pb2_grpc import EventServiceStub
from zerodb_batch.embedded import EmbeddedValkey


@pytest.fixture
def replica(own_database: str, own_valkey: EmbeddedValkey) -> Iterator[tuple[ServerThread, str]]:
    """A server on a Valkey that the test turns into a replica of a master that is not there."""
    redis_url = own_valkey.start()
    with own_server(own_database, redis_url) as running:
        yield running, redis_url


def become_replica(redis_url: str, *, serve_stale_data: bool) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.config_set("replica-serve-stale-data", "yes" if serve_stale_data else "no")
        client.replicaof("127.0.0.1", free_port())  # nothing listens there: the link stays down


def become_primary(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.replicaof("NO", "ONE")


def unavailable(error: grpc.RpcError) -> None:
    assert error.code() is grpc.StatusCode.UNAVAILABLE, error.details()
    assert details(error)[0].reason == "DEPENDENCY_UNAVAILABLE"


def test_a_read_only_replica_makes_group_subscriptions_unavailable(
    replica: tuple[ServerThread, str],
) -> None:
    running, redis_url = replica
    with grpc.insecure_channel(running.address) as channel:
        stub, project = EventServiceStub(channel), Project(*running.new_key())
        become_replica(redis_url, serve_stale_data=True)  # READONLY for XGROUP CREATE
        try:
            group = Subscription(stub, project, consumer_group="g", consumer_name="c")
            unavailable(group.error())
        finally:
            become_primary(redis_url)
        sub = Subscription(stub, project, consumer_group="g", consumer_name="c")
        sub.established()
        publish(stub, project, make_events(2))
        assert len(sub.events(2)) == 2
        sub.cancel()


def test_a_replica_without_its_master_makes_subscriptions_unavailable(
    replica: tuple[ServerThread, str],
) -> None:
    running, redis_url = replica
    with grpc.insecure_channel(running.address) as channel:
        stub, project = EventServiceStub(channel), Project(*running.new_key())
        become_replica(redis_url, serve_stale_data=False)  # MASTERDOWN for XREAD
        try:
            unavailable(Subscription(stub, project, start_after_stream_id="0").error())
        finally:
            become_primary(redis_url)
        ids = list(publish(stub, project, make_events(2)).ids)
        sub = Subscription(stub, project, start_after_stream_id="0")
        sub.established()
        assert [e.id for e in sub.events(2)] == ids
        sub.cancel()
