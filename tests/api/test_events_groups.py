"""Consumer groups: at least once for events delivered from PostgreSQL, a filter fixed per group,
and a stream restored before newer events after Redis came back without its data."""

from __future__ import annotations

import shutil

import grpc
import psycopg
import pytest
import redis

from tests.api.test_events_recovery import scratch_valkey, stream_ids  # noqa: F401 (fixture)
from tests.api.test_events_subscribe import ack, publish_trimming, seconds
from tests.plugins.checks import details, wait_for
from tests.plugins.events import Subscription, make_events, own_server, publish
from tests.plugins.server import Project
from tests.plugins.services import Backends
from zerodb.v1.event_pb2_grpc import EventServiceStub
from zerodb_batch.embedded import EmbeddedValkey


def pending_in_postgres(url: str, project: Project, group: str) -> list[tuple[int, str]]:
    """(seq, consumer) of the events the group holds unacknowledged in PostgreSQL."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT seq, consumer FROM event_group_pending"
            " WHERE project_id = %s AND group_name = %s ORDER BY seq",
            (project.id, group),
        ).fetchall()
    return [(int(s), str(c)) for s, c in rows]


def test_replayed_events_a_dead_consumer_held_go_to_another(
    backends: Backends, own_database: str
) -> None:
    """The stream keeps about 10 of 300 events; consumer `a` of a group from the start gets the
    first 50 from PostgreSQL, acknowledges 10 and dies. After the idle time, `b` gets the other
    40 again (and the rest of the gap `a` was delivering); acknowledged, none stays pending."""
    group = {"consumer_group": "g", "redeliver_after": seconds(1)}
    with own_server(own_database, backends.redis_url, event_stream_maxlen=10) as running:
        project = Project(*running.new_key())
        with grpc.insecure_channel(running.address) as channel:
            stub = EventServiceStub(channel)
            ids = publish_trimming(stub, project)
            with redis.Redis.from_url(backends.redis_url, decode_responses=True) as client:
                first_in_stream = client.xrange(f"zerodb:{{{project.id}}}:events", count=1)
                assert first_in_stream[0][1]["event_id"] not in ids[:50]  # trimmed away
            a = Subscription(stub, project, consumer_name="a", start_after_stream_id="0", **group)
            try:
                a.established()
                got = a.events(50)
                assert [e.id for e in got] == ids[:50]
                assert ack(stub, project, "g", [e.stream_id for e in got[:10]]) == 10
            finally:
                a.cancel()
            held = {seq for seq, who in pending_in_postgres(own_database, project, "g")}
            assert set(range(11, 51)) <= held  # pending in PostgreSQL, not acked

            b = Subscription(
                stub, project, consumer_name="b", heartbeat_interval=seconds(1), **group
            )
            gaps = f"zerodb:{{{project.id}}}:gaps:g"
            try:
                b.established()
                wanted, redelivered = set(ids[10:]), {}
                while not wanted <= redelivered.keys():  # bounded: events() fails after 20 s
                    redelivered.update((e.id, e.stream_id) for e in b.events(1))
                # The rest of a's gap: delivered by b once a's reader left it idle (perhaps
                # again, if a's reader died after a page went out but before it moved the gap).
                with redis.Redis.from_url(backends.redis_url) as client:
                    wait_for(lambda: not client.exists(gaps), "b to finish a's gap")
                while (message := b.next()).HasField("event"):
                    redelivered[message.event.id] = message.event.stream_id
                assert ack(stub, project, "g", list(redelivered.values())) >= len(wanted)
            finally:
                b.cancel()
            assert pending_in_postgres(own_database, project, "g") == []


def test_a_consumer_with_another_filter_than_its_group_is_refused(
    events_stub: EventServiceStub, project: Project
) -> None:
    group = {"consumer_group": "filtered", "topics": ["agent.*", "billing"]}
    first = Subscription(events_stub, project, consumer_name="a", **group)
    same = Subscription(
        events_stub, project, consumer_name="b", consumer_group="filtered",
        topics=["billing", "agent.*"],
    )  # fmt: skip
    try:
        first.established()
        same.established()  # the same filter in another order
        other = Subscription(
            events_stub, project, consumer_name="c", consumer_group="filtered", topics=["billing"]
        )
        error = other.error()
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "[agent.*, billing]" in (error.details() or "")
        assert "[billing]" in (error.details() or "")
        info = details(error)[0]
        assert info.reason == "GROUP_TOPICS_DIFFER"
        assert info.metadata["group_topics"] == "agent.*, billing"
        every = Subscription(events_stub, project, consumer_name="d", consumer_group="filtered")
        assert "[every topic]" in (every.error().details() or "")
    finally:
        first.cancel()
        same.cancel()


def restart_without_data(valkey: EmbeddedValkey) -> None:
    """Stop Valkey and start it again on the same socket with nothing: a client's one retry
    reconnects without noticing."""
    valkey.stop()
    shutil.rmtree(valkey.dir / "appendonlydir")
    valkey.start()


def test_newer_events_wait_until_the_lost_stream_is_restored(
    own_database: str,
    scratch_valkey: EmbeddedValkey,  # noqa: F811 (the fixture)
) -> None:
    """Redis comes back empty between two publishes. The relay's poll (which compares Redis's
    run id) is 60 s away: the publisher's own append finds the stream short of its mark and
    leaves its events to the relay loop, which appends the lost ones first. No hole."""
    redis_url = scratch_valkey.start()
    with (
        own_server(own_database, redis_url, event_relay_poll_seconds=60) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        stub, project = EventServiceStub(channel), Project(*running.new_key())
        before = [i for k in range(3) for i in publish(stub, project, make_events(10)).ids]
        assert stream_ids(redis_url, project.id) == before

        restart_without_data(scratch_valkey)
        after = publish(stub, project, make_events(5))
        assert after.pending_relay == 5  # refused by the append: the stream lost events
        wait_for(
            lambda: stream_ids(redis_url, project.id) == [*before, *after.ids],
            "the lost events, then the new ones",
        )
        assert publish(stub, project, make_events(1)).pending_relay == 0


@pytest.mark.parametrize("topics", [[], ["agent.*"]])
def test_group_start_and_filter_are_kept_in_postgres(
    events_stub: EventServiceStub, project: Project, database_url: str, topics: list[str]
) -> None:
    sub = Subscription(
        events_stub, project, consumer_name="a", consumer_group="kept", topics=topics
    )
    try:
        sub.established()
    finally:
        sub.cancel()
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT topics FROM event_groups WHERE project_id = %s AND group_name = 'kept'",
            (project.id,),
        ).fetchone()
    assert row == (topics,)


def group_start(url: str, project: Project, group: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT start_seq FROM event_groups WHERE project_id = %s AND group_name = %s",
            (project.id, group),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_group_redis_lost_is_made_again_after_what_it_acknowledged(
    own_database: str,
    scratch_valkey: EmbeddedValkey,  # noqa: F811 (the fixture)
) -> None:
    """The group's readers save how far it has acknowledged everything (every few seconds);
    Redis restarting without its data loses the group, and the next subscriber makes it again
    there: the 20 acknowledged events are not delivered again, the 2 unacknowledged ones are."""
    redis_url = scratch_valkey.start()
    group = {"consumer_group": "g", "consumer_name": "a"}
    with (
        own_server(own_database, redis_url) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        stub, project = EventServiceStub(channel), Project(*running.new_key())
        sub = Subscription(stub, project, **group)
        try:
            sub.established()
            ids = list(publish(stub, project, make_events(22)).ids)
            got = sub.events(22)
            assert ack(stub, project, "g", [e.stream_id for e in got[:20]]) == 20
            wait_for(lambda: group_start(own_database, project, "g") == 20, "the checkpoint")
        finally:
            sub.cancel()

        restart_without_data(scratch_valkey)
        wait_for(lambda: stream_ids(redis_url, project.id) == ids, "the stream refilled")
        again = Subscription(stub, project, **group)
        try:
            again.established()
            more = publish(stub, project, make_events(1)).ids
            assert [e.id for e in again.events(3)] == [*ids[20:], *more]
        finally:
            again.cancel()


def test_a_quiet_stream_redis_lost_is_restored_by_the_relay_poll(
    own_database: str,
    scratch_valkey: EmbeddedValkey,  # noqa: F811 (the fixture)
) -> None:
    """Nobody publishes after Redis came back empty on the same socket (the client's reconnect
    hides the restart): the relay loop sees a new run_id at its next poll and refills the
    stream from PostgreSQL."""
    redis_url = scratch_valkey.start()
    with (
        own_server(own_database, redis_url) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        stub, project = EventServiceStub(channel), Project(*running.new_key())
        ids = list(publish(stub, project, make_events(25)).ids)
        assert stream_ids(redis_url, project.id) == ids
        restart_without_data(scratch_valkey)
        wait_for(lambda: stream_ids(redis_url, project.id) == ids, "the stream refilled")
