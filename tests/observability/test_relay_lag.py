"""The relay lag in /metrics: it rises while Redis is down and falls back to zero after."""

from __future__ import annotations

import grpc

from tests.plugins.events import make_events, own_server, publish
from tests.plugins.metrics import scrape, scrape_until
from tests.plugins.server import Project
from zerodb.v1.event_pb2_grpc import EventServiceStub
from zerodb_batch.embedded import EmbeddedValkey

PENDING = "zerodb_event_outbox_pending"
AGE = "zerodb_event_outbox_oldest_age_seconds"
REDIS_UP = ("zerodb_dependency_up", {"dependency": "redis"})


def test_relay_lag_rises_while_redis_is_down_and_falls_to_zero_after(
    own_database: str, own_valkey: EmbeddedValkey
) -> None:
    with (
        own_server(own_database, own_valkey.start()) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        base = running.http or ""
        stub, project = EventServiceStub(channel), Project(*running.new_key())
        publish(stub, project, make_events(5))
        calm = scrape(base)
        assert (calm.value(PENDING), calm.value(AGE)) == (0, 0)

        own_valkey.stop()
        replies = [publish(stub, project, make_events(10, start=10 * k)) for k in range(3)]
        assert sum(r.pending_relay for r in replies) == 30
        behind = scrape_until(base, "30 events behind", lambda s: s.value(PENDING) == 30)
        assert behind.value(AGE) > 0
        assert behind.value("zerodb_event_relay_failures_total", reason="unavailable") >= 1
        older = scrape_until(base, "the lag growing", lambda s: s.value(AGE) > behind.value(AGE))
        assert older.value(PENDING) == 30
        scrape_until(base, "Redis seen down", lambda s: s.value(REDIS_UP[0], **REDIS_UP[1]) == 0)

        own_valkey.start()
        back = scrape_until(base, "the relay caught up", lambda s: s.value(PENDING) == 0)
        assert back.value(AGE) == 0
        relayed = back.value("zerodb_event_relayed_total")
        assert relayed >= 35 and back.value("zerodb_event_relayed_total", path="loop") > 0
        scrape_until(base, "Redis seen up", lambda s: s.value(REDIS_UP[0], **REDIS_UP[1]) == 1)
