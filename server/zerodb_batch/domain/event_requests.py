"""Reading EventService requests: subscription options, list filters and acknowledgements."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from google.protobuf import duration_pb2

from zerodb.v1 import event_pb2
from zerodb_batch import limits
from zerodb_batch.domain.event import Position, TopicFilter
from zerodb_batch.domain.page_token import page_size
from zerodb_batch.domain.rules import check_name
from zerodb_batch.domain.timestamps import optional_datetime
from zerodb_batch.domain.validate import Checker
from zerodb_batch.errors import BatchTooLarge, FailedPrecondition

Start = Position | datetime | None  # after a stream id, from a time, or (None) new events only
POSITION_SHAPE = (int,)  # a ListEvents page ends at the seq of its last event


@dataclass(frozen=True)
class Options:
    """What one SubscribeEvents call asked for, checked."""

    project_id: str
    topics: TopicFilter
    start: Start
    heartbeat: float  # seconds
    group: str = ""
    consumer: str = ""
    max_unacked: int = 0
    redeliver_ms: int = 0


@dataclass(frozen=True)
class ListFilters:
    """A ListEvents request, checked."""

    page_size: int
    topics: TopicFilter
    start: datetime | None
    end: datetime | None


def subscription_options(request: event_pb2.SubscribeEventsRequest) -> Options:
    """The subscription the request asks for; INVALID_ARGUMENT naming every bad field."""
    if len(request.topics) > limits.MAX_TOPIC_FILTERS:
        raise BatchTooLarge("topics", len(request.topics), limits.MAX_TOPIC_FILTERS)
    topics = TopicFilter.parse({f"topics[{i}]": t for i, t in enumerate(request.topics)})
    checker = Checker("")
    start = _start(checker, request)
    heartbeat = _seconds(
        checker,
        request,
        "heartbeat_interval",
        limits.DEFAULT_HEARTBEAT_SECONDS,
        limits.MIN_HEARTBEAT_SECONDS,
        limits.MAX_HEARTBEAT_SECONDS,
    )
    redeliver = _seconds(
        checker,
        request,
        "redeliver_after",
        limits.DEFAULT_REDELIVER_SECONDS,
        limits.MIN_REDELIVER_SECONDS,
        limits.MAX_REDELIVER_SECONDS,
    )
    max_unacked = request.max_unacked or limits.DEFAULT_MAX_UNACKED
    if not 1 <= max_unacked <= limits.MAX_UNACKED:
        checker.add("max_unacked", f"must be 0 to {limits.MAX_UNACKED}", "OUT_OF_RANGE")
    if request.consumer_group:
        check_name(checker, "consumer_group", request.consumer_group, limits.MAX_ID_CHARS)
        checker.text("consumer_name", request.consumer_name, limits.MAX_ID_CHARS, required=True)
    elif request.consumer_name:
        checker.add("consumer_name", "is only used together with consumer_group")
    checker.raise_if_any("SubscribeEvents request is invalid")
    return Options(
        request.project_id,
        topics,
        start,
        heartbeat,
        request.consumer_group,
        request.consumer_name,
        max_unacked,
        int(redeliver * 1000),
    )


def _start(checker: Checker, request: event_pb2.SubscribeEventsRequest) -> Start:
    which = request.WhichOneof("start")
    if which == "start_after_stream_id":
        position = Position.parse(request.start_after_stream_id)
        if position is None:
            checker.add(which, "not a stream entry id such as 1718000000000-1 (or 0)")
        return position
    if which == "start_time":
        return optional_datetime(checker, request, "start_time")
    return None


def _seconds(
    checker: Checker,
    request: event_pb2.SubscribeEventsRequest,
    name: str,
    default: float,
    low: float,
    high: float,
) -> float:
    if not request.HasField(name):  # type: ignore[arg-type]
        return default
    value: duration_pb2.Duration = getattr(request, name)
    seconds = value.seconds + value.nanos / 1e9  # ToTimedelta() overflows on huge values
    if not low <= seconds <= high:
        checker.add(name, f"must be {low:g} s to {high:g} s, got {seconds:g} s", "OUT_OF_RANGE")
    return seconds


def list_filters(request: event_pb2.ListEventsRequest) -> ListFilters:
    checker = Checker("")
    size = page_size(checker, request.page_size, limits.DEFAULT_EVENTS_PAGE_SIZE)
    start = optional_datetime(checker, request, "start_time")
    end = optional_datetime(checker, request, "end_time")
    checker.raise_if_any("ListEvents request is invalid")
    topics = TopicFilter.parse({"topic": request.topic} if request.topic else {})
    return ListFilters(size, topics, start, end)


def check_ack(request: event_pb2.AckEventsRequest) -> None:
    checker = Checker("")
    check_name(checker, "consumer_group", request.consumer_group, limits.MAX_ID_CHARS)
    for i, stream_id in enumerate(request.stream_ids):
        if Position.parse(stream_id) is None:
            checker.add(f"stream_ids[{i}]", "not a stream entry id such as 1718000000000-1")
    checker.raise_if_any("AckEvents request is invalid")


def check_group_filter(group: str, fixed: list[str], asked: list[str]) -> None:
    """A consumer's topic filter must be its group's (fixed by the group's first subscriber): a
    consumer with another one would acknowledge, unseen, events the rest of the group wants."""
    if fixed != asked:
        shown = ", ".join(fixed) or "every topic"
        wanted = ", ".join(asked) or "every topic"
        raise FailedPrecondition(
            f"consumer group {group!r} reads topics [{shown}]; this consumer asked for"
            f" [{wanted}]: subscribe with the group's topics, or use another group",
            reason="GROUP_TOPICS_DIFFER",
            metadata={"consumer_group": group, "group_topics": shown, "topics": wanted},
        )
