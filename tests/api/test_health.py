"""The health service follows the dependencies, seen through the real health client (Check on
every service): NOT_SERVING while PostgreSQL is unreachable and SERVING once it is back; a Redis
outage changes no status."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_health.v1.health_pb2_grpc import HealthStub

from tests.plugins.checks import Outage, wait_for
from tests.plugins.events import own_server
from tests.plugins.server import ServerThread
from zerodb_batch.app import SERVICE_NAMES
from zerodb_batch.embedded import EmbeddedValkey
from zerodb_batch.errors import Unavailable

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def statuses(channel: grpc.Channel) -> set[int]:
    stub = HealthStub(channel)
    names = ("", *SERVICE_NAMES)
    return {stub.Check(health_pb2.HealthCheckRequest(service=n)).status for n in names}


def test_health_is_not_serving_while_postgres_is_unreachable(
    outage: tuple[Outage, ServerThread],
) -> None:
    down, running = outage
    monitor = running.app.monitor
    assert monitor is not None
    with grpc.insecure_channel(running.address) as channel:
        assert statuses(channel) == {SERVING}

        cut = time.monotonic()
        down.allow(False)
        wait_for(lambda: statuses(channel) == {NOT_SERVING}, "NOT_SERVING on every service")
        went_down = time.monotonic() - cut
        assert not monitor.postgres_up
        with pytest.raises(Unavailable):
            monitor.require_postgres()

        back = time.monotonic()
        down.allow(True)
        wait_for(lambda: statuses(channel) == {SERVING}, "SERVING on every service")
        came_back = time.monotonic() - back
        assert monitor.postgres_up
    print(f"\nNOT_SERVING {went_down:.2f} s after the cut, SERVING {came_back:.2f} s after")


def test_a_redis_outage_leaves_every_service_serving(
    own_database: str, own_valkey: EmbeddedValkey
) -> None:
    """Publishing goes on through the outbox while Redis is down; only the monitor's redis_up
    (for calls that need Redis to fail fast) says so."""
    redis_url = own_valkey.start()
    with (
        own_server(own_database, redis_url) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        monitor = running.app.monitor
        assert monitor is not None
        wait_for(lambda: monitor.redis_up, "the first Redis probe")
        own_valkey.stop()
        wait_for(lambda: not monitor.redis_up, "the monitor to see Redis down")
        assert statuses(channel) == {SERVING}
        own_valkey.start()
        wait_for(lambda: monitor.redis_up, "the monitor to see Redis back")
        assert monitor.postgres_up and statuses(channel) == {SERVING}


def test_watch_streams_the_status_through_the_interceptor(server: ServerThread) -> None:
    """Watch (what gRPC's client-side health checking uses) is a handler that writes its own
    responses; the interceptor must serve it like any other server stream."""
    with grpc.insecure_channel(server.address) as channel:
        watch = HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(iter(watch)).status == SERVING
        watch.cancel()
