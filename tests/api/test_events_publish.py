"""BatchPublishEvents and ListEvents through a real server, PostgreSQL and Redis."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest
import redis
from google.protobuf import struct_pb2

from tests.plugins.checks import assert_too_large, details, wait_for
from tests.plugins.events import (
    make_events,
    own_server,
    publish,
    stream_key,
    xadd_calls,
)
from tests.plugins.server import Project, ServerThread
from zerodb.v1 import common_pb2, event_pb2
from zerodb.v1.event_pb2_grpc import EventServiceStub
from zerodb_batch.embedded import EmbeddedValkey

Db = psycopg.Connection[tuple[object, ...]]


def stored(db: Db, project: Project) -> list[tuple[str, str]]:
    """(id, topic) of the project's events in PostgreSQL, in seq order."""
    rows = db.execute(
        "SELECT id::text, topic FROM events WHERE project_id = %s ORDER BY seq", (project.id,)
    ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def stream_ids(client: redis.Redis, project: Project) -> list[str]:
    """The event ids in the project's Redis stream, in stream order."""
    return [fields["event_id"] for _, fields in client.xrange(stream_key(project.id))]


def list_events(
    stub: EventServiceStub, project: Project, **kw: object
) -> event_pb2.ListEventsResponse:
    request = event_pb2.ListEventsRequest(project_id=project.id, **kw)  # type: ignore[arg-type]
    return stub.ListEvents(request, metadata=project.auth)


def test_seed_publish_returns_ids_in_request_order(
    events_stub: EventServiceStub, project: Project, db: Db
) -> None:
    events = [event_pb2.Event(topic=f"agent.step.{i}") for i in range(10)]
    reply = publish(events_stub, project, events)
    assert (reply.published, reply.failed, reply.pending_relay) == (10, 0, 0)
    assert [r.index for r in reply.results] == list(range(10))
    assert [r.outcome for r in reply.results] == [common_pb2.OUTCOME_INSERTED] * 10
    assert list(reply.ids) == [r.id for r in reply.results]
    assert stored(db, project) == [(i, f"agent.step.{n}") for n, i in enumerate(reply.ids)]


def test_publish_100_refuse_101(events_stub: EventServiceStub, project: Project, db: Db) -> None:
    events = make_events(101)
    with pytest.raises(grpc.RpcError) as caught:
        publish(events_stub, project, events)
    assert_too_large(caught.value, "events", 100, 101)
    assert stored(db, project) == []

    reply = publish(events_stub, project, events[:100])
    assert reply.published == 100 and len(set(reply.ids)) == 100
    assert [i for i, _ in stored(db, project)] == list(reply.ids)


def test_every_event_reaches_the_stream_once_with_its_id(
    own_database: str, own_valkey: EmbeddedValkey
) -> None:
    """Concurrent publishers to one project: the stream holds each event once, in seq order.
    A server and Valkey of the test's own, so the XADD counter is this test's alone."""
    redis_url = own_valkey.start()
    with (
        own_server(own_database, redis_url) as running,
        grpc.insecure_channel(running.address) as channel,
        redis.Redis.from_url(redis_url, decode_responses=True) as redis_client,
        psycopg.connect(own_database, autocommit=True) as db,
    ):
        project = Project(*running.new_key())
        sent = xadd_calls(redis_client)
        replies = publish_concurrently(EventServiceStub(channel), project)
        check_stream(redis_client, db, project, replies)
        appended = xadd_calls(redis_client) - sent
        assert appended == sum(r.published for r in replies)  # no event appended twice


def publish_concurrently(
    stub: EventServiceStub, project: Project
) -> list[event_pb2.BatchPublishEventsResponse]:
    def publisher(k: int) -> list[event_pb2.BatchPublishEventsResponse]:
        return [publish(stub, project, make_events(20, start=100 * k + 20 * b)) for b in range(5)]

    with ThreadPoolExecutor(4) as threads:
        calls = [threads.submit(publisher, k) for k in range(4)]
        return [r for c in calls for r in c.result(timeout=60)]


def check_stream(
    redis_client: redis.Redis,
    db: Db,
    project: Project,
    replies: list[event_pb2.BatchPublishEventsResponse],
) -> None:
    assert all(r.pending_relay == 0 for r in replies)
    published = {i for r in replies for i in r.ids}
    assert len(published) == 400
    in_stream = stream_ids(redis_client, project)
    assert in_stream == [i for i, _ in stored(db, project)]  # each once, in seq order
    assert set(in_stream) == published

    entry_id, fields = redis_client.xrange(stream_key(project.id), count=1)[0]
    assert set(fields) == {"event_id", "topic", "payload", "published_at"}
    assert entry_id.endswith("-1") and fields["published_at"].endswith("Z")
    relayed = db.execute(
        "SELECT relayed_seq FROM event_relays WHERE project_id = %s", (project.id,)
    ).fetchone()
    assert relayed == (400,)


def test_empty_batch_refused(events_stub: EventServiceStub, project: Project) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        publish(events_stub, project, [])
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1].field_violations[0].field == "events"


def big_payload() -> struct_pb2.Struct:
    payload = struct_pb2.Struct()
    payload.update({"blob": "x" * (64 * 1024)})
    return payload


BAD = [
    event_pb2.Event(topic="agent.ok"),
    event_pb2.Event(topic=""),
    event_pb2.Event(topic="has space"),
    event_pb2.Event(topic="t" * 257),
    event_pb2.Event(topic="wild.*"),
    event_pb2.Event(topic="agent.big", event_payload=big_payload()),
]


def test_atomic_batch_lists_every_violation_and_writes_nothing(
    events_stub: EventServiceStub, project: Project, db: Db
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        publish(events_stub, project, BAD)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = details(caught.value)[1].field_violations
    assert [(v.field, v.reason) for v in violations] == [
        ("events[1].topic", "REQUIRED"),
        ("events[2].topic", "INVALID_CHARACTER"),
        ("events[3].topic", "TOO_LONG"),
        ("events[4].topic", "INVALID_CHARACTER"),
        ("events[5].event_payload", "TOO_LONG"),
    ]
    assert stored(db, project) == []


def test_partial_success_publishes_the_valid_ones(
    events_stub: EventServiceStub, project: Project, redis_client: redis.Redis
) -> None:
    reply = publish(events_stub, project, BAD, partial_success=True)
    assert (reply.published, reply.failed) == (1, 5)
    assert [r.outcome for r in reply.results] == [common_pb2.OUTCOME_INSERTED] + [
        common_pb2.OUTCOME_FAILED
    ] * 5
    assert reply.ids[1:] == [""] * 5
    assert stream_ids(redis_client, project) == [reply.ids[0]]


def test_request_id_retry_publishes_nothing_twice(
    events_stub: EventServiceStub, project: Project, redis_client: redis.Redis, db: Db
) -> None:
    events = make_events(3)
    first = publish(events_stub, project, events, request_id="pub-1")
    again = publish(events_stub, project, events, request_id="pub-1")
    assert again == first
    assert len(stored(db, project)) == 3
    assert stream_ids(redis_client, project) == list(first.ids)

    with pytest.raises(grpc.RpcError) as caught:
        publish(events_stub, project, events[:1], request_id="pub-1")
    assert details(caught.value)[0].reason == "REQUEST_ID_REUSED"
    assert len(stored(db, project)) == 3


def test_payload_round_trips_through_list(events_stub: EventServiceStub, project: Project) -> None:
    event = event_pb2.Event(topic="agent.task.completed")
    event.event_payload.update({"task": "t-1", "ok": True, "score": 0.5, "tags": ["a", {"b": 1}]})
    reply = publish(events_stub, project, [event])
    listed = list_events(events_stub, project).events
    assert [(e.id, e.topic) for e in listed] == [(reply.ids[0], "agent.task.completed")]
    assert listed[0].event_payload == event.event_payload
    assert listed[0].stream_id.endswith("-1") and listed[0].publish_time.seconds > 0


def test_list_pages_filters_by_topic_and_time(
    events_stub: EventServiceStub, project: Project
) -> None:
    first = publish(events_stub, project, make_events(30, topic="agent.task.done"))
    publish(events_stub, project, make_events(20, topic="agent.plan"))
    publish(events_stub, project, make_events(10, topic="billing.paid"))

    pages, token = [], ""
    while True:
        page = list_events(events_stub, project, page_size=25, page_token=token)
        pages.append(len(page.events))
        token = page.next_page_token
        if not token:
            break
    assert pages == [25, 25, 10]

    exact = list_events(events_stub, project, topic="agent.task.done", page_size=1000)
    assert [e.id for e in exact.events] == list(first.ids)
    prefix = list_events(events_stub, project, topic="agent.*", page_size=1000)
    assert len(prefix.events) == 50 and {e.topic for e in prefix.events} == {
        "agent.task.done",
        "agent.plan",
    }
    assert list_events(events_stub, project, topic="agent").events == []

    later = datetime.now(UTC) + timedelta(hours=1)
    start = event_pb2.ListEventsRequest().start_time
    start.FromDatetime(later)
    assert list_events(events_stub, project, start_time=start).events == []
    assert len(list_events(events_stub, project, end_time=start, page_size=1000).events) == 60


def test_list_refuses_foreign_and_bad_tokens(
    events_stub: EventServiceStub, project: Project
) -> None:
    publish(events_stub, project, make_events(3))
    token = list_events(events_stub, project, page_size=1).next_page_token
    body, _, tag = token.partition(".")
    query = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))[0]
    forged = [  # a signed-looking token whose position we chose: digits int() refuses, a huge seq
        base64.urlsafe_b64encode(json.dumps([query, after]).encode()).decode().rstrip("=")
        + f".{tag}"
        for after in ("\u00b2", int("9" * 50), 1)
    ]
    for kw, reason in (
        ({"page_token": "not-a-token"}, "PAGE_TOKEN_INVALID"),
        ({"page_token": token, "topic": "agent.*"}, "PAGE_TOKEN_MISMATCH"),
        *(({"page_token": t}, "PAGE_TOKEN_INVALID") for t in forged),
        ({"page_size": -1}, "INVALID_ARGUMENT"),
        ({"topic": "bad topic"}, "INVALID_ARGUMENT"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            list_events(events_stub, project, **kw)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, kw
        assert details(caught.value)[0].reason == reason, kw
    # AIP-158: an oversized page is lowered to the maximum, not refused.
    assert len(list_events(events_stub, project, page_size=5000).events) == 3


@pytest.mark.parametrize(
    "rpc", ["BatchPublishEvents", "SubscribeEvents", "AckEvents", "ListEvents"]
)
def test_every_events_rpc_needs_the_projects_key(
    events_stub: EventServiceStub, project: Project, server: ServerThread, rpc: str
) -> None:
    requests = {
        "BatchPublishEvents": event_pb2.BatchPublishEventsRequest(events=make_events(1)),
        "SubscribeEvents": event_pb2.SubscribeEventsRequest(),
        "AckEvents": event_pb2.AckEventsRequest(consumer_group="g", stream_ids=["1-1"]),
        "ListEvents": event_pb2.ListEventsRequest(),
    }
    request = requests[rpc]
    request.project_id = project.id  # type: ignore[attr-defined]
    other = Project(*server.new_key())
    for metadata, code in (
        ((), grpc.StatusCode.UNAUTHENTICATED),
        (other.auth, grpc.StatusCode.PERMISSION_DENIED),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            reply = getattr(events_stub, rpc)(request, metadata=metadata)
            if rpc == "SubscribeEvents":
                next(iter(reply))  # type: ignore[call-overload]
        assert caught.value.code() is code


def test_a_list_page_stays_a_few_mib_whatever_its_page_size(
    events_stub: EventServiceStub, project: Project
) -> None:
    """Default gRPC clients refuse messages over 4 MiB; payloads reach 64 KiB each."""
    events = make_events(100)
    for e in events:
        e.event_payload.update({"blob": "x" * 60_000})
    reply = publish(events_stub, project, events)
    pages, token = [], ""
    while True:
        page = list_events(events_stub, project, page_size=1000, page_token=token)
        pages.append(page)
        token = page.next_page_token
        if not token:
            break
    assert len(pages) >= 3 and all(0 < p.ByteSize() < 3 * 1024 * 1024 for p in pages[:-1])
    assert [e.id for p in pages for e in p.events] == list(reply.ids)


def test_a_publisher_stuck_behind_another_relayer_leaves_its_events_to_the_relay(
    events_stub: EventServiceStub, project: Project, redis_client: redis.Redis, db: Db
) -> None:
    """Another process holds the project's relay row (a relayer stalled on a slow Redis)."""
    first = publish(events_stub, project, make_events(1))
    with db.transaction():
        db.execute("SELECT 1 FROM event_relays WHERE project_id = %s FOR UPDATE", (project.id,))
        stuck = publish(events_stub, project, make_events(2))  # waits out the lock timeout
        assert (stuck.published, stuck.pending_relay) == (2, 2)
    # Released: a relay loop (woken by the publisher's NOTIFY, or polling) appends them.
    expected = [*first.ids, *stuck.ids]
    wait_for(lambda: stream_ids(redis_client, project) == expected, "the relay loop")
