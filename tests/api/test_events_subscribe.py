"""SubscribeEvents and AckEvents: topic filters, start positions, replay, consumer groups."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import redis
from google.protobuf import duration_pb2, timestamp_pb2

from tests.plugins.checks import details, wait_for
from tests.plugins.events import (
    Subscription,
    make_events,
    own_server,
    publish,
    stream_key,
)
from tests.plugins.server import Project
from tests.plugins.services import Backends
from zerodb.v1 import event_pb2
from zerodb.v1.event_pb2_grpc import EventServiceStub


def seconds(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(int(value * 1000))
    return d


@pytest.fixture
def subscriptions() -> Iterator[list[Subscription]]:
    """Subscriptions to cancel when the test ends, however it ends."""
    opened: list[Subscription] = []
    yield opened
    for s in opened:
        s.cancel()


def subscribe(
    opened: list[Subscription], stub: EventServiceStub, project: Project, **kw: object
) -> Subscription:
    s = Subscription(stub, project, **kw)
    opened.append(s)
    return s


def test_subscriber_sees_only_its_topics(
    events_stub: EventServiceStub, project: Project, subscriptions: list[Subscription]
) -> None:
    sub = subscribe(subscriptions, events_stub, project, topics=["agent.task.*", "billing.paid"])
    sub.established()
    mixed = (
        make_events(2, topic="agent.task.done")
        + make_events(2, topic="agent.plan")  # `agent.task.*` must not match
        + make_events(1, topic="billing.paid")
        + make_events(1, topic="billing.paid.late")  # exact topics match exactly
        + make_events(1, topic="agent.taskforce")  # the dot is part of the prefix
        + make_events(1, topic="agent.task.started")
    )
    reply = publish(events_stub, project, mixed)
    got = sub.events(4)
    expected = [reply.ids[i] for i in (0, 1, 4, 7)]
    assert [e.id for e in got] == expected
    assert [e.topic for e in got] == ["agent.task.done"] * 2 + [
        "billing.paid",
        "agent.task.started",
    ]
    assert got[0].event_payload["n"] == 0 and got[0].stream_id

    # Nothing else was delivered in between: the next event is the next matching one.
    last = publish(events_stub, project, make_events(1, topic="billing.paid"))
    assert [e.id for e in sub.events(1)] == list(last.ids)


def test_start_from_new_skips_earlier_events(
    events_stub: EventServiceStub, project: Project, subscriptions: list[Subscription]
) -> None:
    publish(events_stub, project, make_events(3))
    sub = subscribe(subscriptions, events_stub, project, start_from_new=True)
    beat = sub.established()
    assert beat.last_stream_id.endswith("-3")
    later = publish(events_stub, project, make_events(2))
    assert [e.id for e in sub.events(2)] == list(later.ids)


def test_start_after_a_stream_id_and_at_a_time(
    events_stub: EventServiceStub, project: Project, subscriptions: list[Subscription]
) -> None:
    first = publish(events_stub, project, make_events(3))
    second = publish(events_stub, project, make_events(3, start=3))
    everything = subscribe(subscriptions, events_stub, project, start_after_stream_id="0")
    everything.established()
    got = everything.events(6)
    assert [e.id for e in got] == [*first.ids, *second.ids]

    after = subscribe(subscriptions, events_stub, project, start_after_stream_id=got[1].stream_id)
    after.established()
    assert [e.id for e in after.events(4)] == [e.id for e in got[2:]]

    at = timestamp_pb2.Timestamp()
    at.CopyFrom(got[3].publish_time)
    timed = subscribe(subscriptions, events_stub, project, start_time=at)
    timed.established()
    assert [e.id for e in timed.events(3)] == list(second.ids)


def test_heartbeats_while_idle_carry_the_position(
    events_stub: EventServiceStub, project: Project, subscriptions: list[Subscription]
) -> None:
    reply = publish(events_stub, project, make_events(1))
    sub = subscribe(
        subscriptions,
        events_stub,
        project,
        start_after_stream_id="0",
        heartbeat_interval=seconds(1),
    )
    sub.established()
    event = sub.events(1)[0]
    assert event.id == reply.ids[0]
    beat = sub.next(timeout=10)
    assert beat.HasField("heartbeat") and beat.heartbeat.last_stream_id == event.stream_id
    assert beat.heartbeat.server_time.seconds > 0


def test_events_beyond_retention_are_replayed_from_postgres(
    backends: Backends, own_database: str
) -> None:
    """The stream keeps about 10 entries; a subscriber from the start still gets all 300."""
    with own_server(own_database, backends.redis_url, event_stream_maxlen=10) as running:
        project = Project(*running.new_key())
        with grpc.insecure_channel(running.address) as channel:
            stub = EventServiceStub(channel)
            ids = [
                i
                for k in range(3)
                for i in publish(stub, project, make_events(100, start=100 * k)).ids
            ]
            with redis.Redis.from_url(backends.redis_url) as client:
                assert client.xlen(stream_key(project.id)) < 300  # trimmed
            sub = Subscription(stub, project, start_after_stream_id="0")
            try:
                sub.established()
                got = sub.events(300)
                assert [e.id for e in got] == ids
                assert [e.event_payload["n"] for e in got] == list(range(300))
                more = publish(stub, project, make_events(2, start=300))
                assert [e.id for e in sub.events(2)] == list(more.ids)
            finally:
                sub.cancel()


def ack(stub: EventServiceStub, project: Project, group: str, ids: list[str]) -> int:
    request = event_pb2.AckEventsRequest(
        project_id=project.id, consumer_group=group, stream_ids=ids
    )
    return stub.AckEvents(request, metadata=project.auth).acked


def test_consumer_group_redelivers_an_unacked_event_after_the_idle_timeout(
    events_stub: EventServiceStub,
    project: Project,
    subscriptions: list[Subscription],
    redis_client: redis.Redis,
) -> None:
    group = {"consumer_group": "workers", "redeliver_after": seconds(1)}
    first = subscribe(subscriptions, events_stub, project, consumer_name="a", **group)
    first.established()
    reply = publish(events_stub, project, make_events(2))
    got = first.events(2)
    assert [e.id for e in got] == list(reply.ids)
    assert ack(events_stub, project, "workers", [got[0].stream_id]) == 1
    first.cancel()  # consumer `a` dies holding the second event unacknowledged

    second = subscribe(subscriptions, events_stub, project, consumer_name="b", **group)
    second.established()
    redelivered = second.events(1, timeout=15)
    assert [e.id for e in redelivered] == [reply.ids[1]]
    assert ack(events_stub, project, "workers", [redelivered[0].stream_id]) == 1
    assert ack(events_stub, project, "workers", [redelivered[0].stream_id]) == 0  # already acked
    assert redis_client.xpending(stream_key(project.id), "workers")["pending"] == 0


def test_consumer_group_pauses_at_max_unacked(
    events_stub: EventServiceStub, project: Project, subscriptions: list[Subscription]
) -> None:
    sub = subscribe(
        subscriptions,
        events_stub,
        project,
        consumer_group="g",
        consumer_name="c",
        max_unacked=2,
        heartbeat_interval=seconds(1),
    )
    sub.established()
    publish(events_stub, project, make_events(4))
    got = sub.events(2)
    paused = sub.next(timeout=10)
    assert paused.HasField("heartbeat"), "a third event was delivered beyond max_unacked"
    assert ack(events_stub, project, "g", [e.stream_id for e in got]) == 2
    assert len(sub.events(2)) == 2


def test_consumer_group_acks_other_topics_without_delivering(
    events_stub: EventServiceStub,
    project: Project,
    subscriptions: list[Subscription],
    redis_client: redis.Redis,
) -> None:
    sub = subscribe(
        subscriptions,
        events_stub,
        project,
        consumer_group="g",
        consumer_name="c",
        topics=["wanted"],
    )
    sub.established()
    reply = publish(
        events_stub, project, make_events(3, topic="other") + make_events(1, topic="wanted")
    )
    assert [e.id for e in sub.events(1)] == [reply.ids[3]]
    wait_for(
        lambda: redis_client.xpending(stream_key(project.id), "g")["pending"] == 1,
        "the filtered-out entries to be acknowledged",
    )


def test_subscription_options_are_validated(
    events_stub: EventServiceStub, project: Project
) -> None:
    cases = [
        ({"topics": ["bad topic"]}, "topics[0]"),
        ({"topics": ["*"]}, "topics[0]"),
        ({"topics": ["t"] * 101}, "topics"),
        ({"start_after_stream_id": "yesterday"}, "start_after_stream_id"),
        ({"heartbeat_interval": seconds(0.5)}, "heartbeat_interval"),
        ({"consumer_name": "c"}, "consumer_name"),
        ({"consumer_group": "g"}, "consumer_name"),
        ({"consumer_group": "g g", "consumer_name": "c"}, "consumer_group"),
        ({"consumer_group": "g", "consumer_name": "c", "max_unacked": 10001}, "max_unacked"),
        (
            {"consumer_group": "g", "consumer_name": "c", "redeliver_after": seconds(0)},
            "redeliver_after",
        ),
    ]
    for kw, field in cases:
        call = events_stub.SubscribeEvents(
            event_pb2.SubscribeEventsRequest(project_id=project.id, **kw),  # type: ignore[arg-type]
            metadata=project.auth,
        )
        with pytest.raises(grpc.RpcError) as caught:
            next(iter(call))
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, kw
        assert [v.field for v in details(caught.value)[1].field_violations] == [field], kw


def test_ack_is_validated(events_stub: EventServiceStub, project: Project) -> None:
    for group, ids, field in (
        ("", ["1-1"], "consumer_group"),
        ("g", ["1-1", "nope"], "stream_ids[1]"),
        ("g", [], "stream_ids"),
        ("g", ["1-1"] * 1001, "stream_ids"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            ack(events_stub, project, group, ids)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert details(caught.value)[1].field_violations[0].field == field
    assert ack(events_stub, project, "never-created", ["1-1"]) == 0


def test_consumer_group_from_the_start_gets_events_beyond_retention(
    backends: Backends, own_database: str
) -> None:
    """A group joining from "0" gets what the stream trimmed away from PostgreSQL, in order."""
    with own_server(own_database, backends.redis_url, event_stream_maxlen=10) as running:
        project = Project(*running.new_key())
        with grpc.insecure_channel(running.address) as channel:
            stub = EventServiceStub(channel)
            ids = [i for k in range(3) for i in publish_100(stub, project, k).ids]
            sub = Subscription(
                stub, project, consumer_group="g", consumer_name="c", start_after_stream_id="0"
            )
            try:
                sub.established()
                assert [e.id for e in sub.events(300)] == ids
                more = publish(stub, project, make_events(2, start=300))
                assert [e.id for e in sub.events(2)] == list(more.ids)
            finally:
                sub.cancel()


def publish_100(
    stub: EventServiceStub, project: Project, k: int
) -> event_pb2.BatchPublishEventsResponse:
    return publish(stub, project, make_events(100, start=100 * k))


def test_pending_entries_trimmed_away_are_delivered_from_postgres(
    backends: Backends, own_database: str
) -> None:
    """Consumer `a` dies holding 5 events; 300 more trim them out of the stream. `a` coming
    back gets its 5 again, and so does `b` taking over a's entries after the idle timeout."""
    group = {"consumer_group": "g", "redeliver_after": seconds(1)}
    with own_server(own_database, backends.redis_url, event_stream_maxlen=10) as running:
        project = Project(*running.new_key())
        with grpc.insecure_channel(running.address) as channel:
            stub = EventServiceStub(channel)
            held = take_and_die(stub, project, group)
            publish_trimming(stub, project)
            back = Subscription(stub, project, consumer_name="a", **group)
            try:
                back.established()
                assert [e.id for e in back.events(5)] == held
            finally:
                back.cancel()

            held = take_and_die(stub, project, {**group, "consumer_group": "h"})
            later = publish_trimming(stub, project)
            other = Subscription(stub, project, consumer_name="b", consumer_group="h",
                                 redeliver_after=seconds(1))  # fmt: skip
            try:
                other.established()
                wanted, got = {*held, *later}, set[str]()
                while not wanted <= got:  # bounded: events() fails after 20 s without one
                    got.update(e.id for e in other.events(1))
            finally:
                other.cancel()


def take_and_die(stub: EventServiceStub, project: Project, group: dict[str, object]) -> list[str]:
    """Consumer `a` gets 5 new events and goes away without acknowledging them. (At its
    max_unacked, so that its server side reads nothing more before it notices the cancel.)"""
    first = Subscription(stub, project, consumer_name="a", max_unacked=5, **group)
    try:
        first.established()
        reply = publish(stub, project, make_events(5))
        assert [e.id for e in first.events(5)] == list(reply.ids)
    finally:
        first.cancel()
    return list(reply.ids)


def publish_trimming(stub: EventServiceStub, project: Project) -> list[str]:
    return [i for k in range(3) for i in publish_100(stub, project, k).ids]


def test_a_live_consumer_is_not_redelivered_its_own_unacked_events(
    events_stub: EventServiceStub,
    project: Project,
    subscriptions: list[Subscription],
    redis_client: redis.Redis,
) -> None:
    sub = subscribe(
        subscriptions,
        events_stub,
        project,
        consumer_group="g",
        consumer_name="a",
        redeliver_after=seconds(1),
        heartbeat_interval=seconds(1),
    )
    sub.established()
    reply = publish(events_stub, project, make_events(1))
    assert [e.id for e in sub.events(1)] == list(reply.ids)
    # Three idle heartbeats: several claim sweeps after the entry went idle past 1 s.
    for _ in range(3):
        assert sub.next(timeout=10).HasField("heartbeat"), "its own entry was delivered again"
    pending = redis_client.xpending_range(stream_key(project.id), "g", "-", "+", 10)
    assert [(p["consumer"], p["times_delivered"]) for p in pending] == [("a", 1)]


def test_a_key_that_is_not_a_stream_is_a_failed_precondition(
    events_stub: EventServiceStub, project: Project, redis_client: redis.Redis
) -> None:
    redis_client.set(stream_key(project.id), "not a stream")
    try:
        with pytest.raises(grpc.RpcError) as caught:
            ack(events_stub, project, "g", ["1-1"])
        assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        sub = Subscription(events_stub, project, consumer_group="g", consumer_name="c")
        assert sub.error().code() is grpc.StatusCode.FAILED_PRECONDITION
    finally:
        redis_client.delete(stream_key(project.id))
