"""Event rules without I/O: topics and filters, stream positions, the publish batch checks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf import struct_pb2

from zerodb.v1 import event_pb2
from zerodb_batch.domain.event import (
    Position,
    TopicFilter,
    epoch_ms,
    from_epoch_ms,
    parse_events,
)
from zerodb_batch.errors import InvalidArgument


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1718000000000-42", Position(1718000000000, 42)),
        ("0", Position(0, 0)),
        ("17", Position(17, 0)),
        (f"253402300799999-{2**63 - 1}", Position(253402300799999, 2**63 - 1)),
        ("253402300800000-0", None),  # past year 9999: no time of ours
        (f"1-{2**63}", None),  # past PostgreSQL's bigint: no seq of ours
        (f"{2**64}-0", None),
        ("1-2-3", None),
        ("-1", None),
        ("", None),
        ("$", None),
        (">", None),
    ],
)
def test_stream_ids_parse_like_redis(text: str, expected: Position | None) -> None:
    assert Position.parse(text) == expected


def test_positions_order_like_redis_ids() -> None:
    assert Position(5, 10) < Position(6, 1) < Position(6, 2)
    assert str(Position(6, 2)) == "6-2"


def test_epoch_milliseconds_are_exact() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert from_epoch_ms(epoch_ms(when)) == when
    assert epoch_ms(datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)) == 1


def test_topic_filters_match_exactly_or_by_dotted_prefix() -> None:
    topics = TopicFilter.parse({"topics[0]": "agent.*", "topics[1]": "billing.paid"})
    assert topics.matches("agent.task.done") and topics.matches("agent.x")
    assert not topics.matches("agents.x") and not topics.matches("agent")
    assert topics.matches("billing.paid") and not topics.matches("billing.paid.late")
    assert TopicFilter.parse({}).matches("anything")


@pytest.mark.parametrize("bad", ["", "*", "a.*.b", "a b", "agent.**", "é"])
def test_bad_topic_filters_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        TopicFilter.parse({"topics[3]": bad})
    assert caught.value.violations[0].field == "topics[3]"


def event(topic: str, **payload: object) -> event_pb2.Event:
    e = event_pb2.Event(topic=topic)
    e.event_payload.update(payload)
    return e


def test_fast_and_full_checks_agree_at_the_limits() -> None:
    big = struct_pb2.Struct()
    big.update({"k": "é" * (32 * 1024 - 8)})  # under 64 KiB as UTF-8, over a quarter in chars
    batch = parse_events(
        [event("t" * 256, a=1), event("a:b-c_d.e"), event_pb2.Event(topic="x", event_payload=big)],
        partial=False,
    )
    assert batch.rows.index == [0, 1, 2]
    assert batch.rows.payloads[:2] == ['{"a":1}', "{}"]


def test_partial_batch_keeps_the_valid_events_in_order() -> None:
    batch = parse_events([event("ok.1"), event("bad topic"), event("ok.2")], partial=True)
    assert (batch.rows.index, batch.rows.topics) == ([0, 2], ["ok.1", "ok.2"])
    assert [v.field for v in batch.failures[1]] == ["events[1].topic"]
