"""Reading EventService requests: subscription options, list filters, and page tokens."""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime

from google.protobuf import duration_pb2

from zerodb.v1 import event_pb2
from zerodb_batch import limits
from zerodb_batch.domain.events import Position, TopicFilter, check_name
from zerodb_batch.domain.validate import Checker
from zerodb_batch.errors import BatchTooLarge, InvalidArgument, Violation
from zerodb_batch.events.subscription import Options, Start


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
        return request.start_time.ToDatetime(tzinfo=UTC)
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
    seconds = value.ToTimedelta().total_seconds()
    if not low <= seconds <= high:
        checker.add(name, f"must be {low:g} s to {high:g} s, got {seconds:g} s", "OUT_OF_RANGE")
    return seconds


def list_filters(
    request: event_pb2.ListEventsRequest,
) -> tuple[int, TopicFilter, datetime | None, datetime | None]:
    checker = Checker("")
    size = request.page_size or limits.DEFAULT_EVENTS_PAGE_SIZE
    if not 1 <= size <= limits.MAX_PAGE_SIZE:
        checker.add("page_size", f"must be 0 to {limits.MAX_PAGE_SIZE}", "OUT_OF_RANGE")
    checker.raise_if_any("ListEvents request is invalid")
    topic = TopicFilter.parse({"topic": request.topic} if request.topic else {})
    start = request.start_time.ToDatetime(tzinfo=UTC) if request.HasField("start_time") else None
    end = request.end_time.ToDatetime(tzinfo=UTC) if request.HasField("end_time") else None
    return size, topic, start, end


def query_digest(request: event_pb2.ListEventsRequest) -> str:
    """What a page token is bound to: the request without its page size and token."""
    query = event_pb2.ListEventsRequest()
    query.CopyFrom(request)
    query.page_size, query.page_token = 0, ""
    return hashlib.sha256(query.SerializeToString(deterministic=True)).hexdigest()[:16]


def encode_token(after_seq: int, query: str) -> str:
    return base64.urlsafe_b64encode(f"{after_seq}:{query}".encode()).decode()


def decode_token(token: str, query: str) -> int:
    """The seq a page continues after; INVALID_ARGUMENT for a token of another query."""
    try:
        after, _, bound_to = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        # ASCII digits only, at most 19 of them: isdigit() alone accepts '²' and other digits
        # int() refuses, and a bigint seq never needs more.
        valid = bound_to == query and after.isascii() and after.isdigit() and len(after) <= 19
    except (binascii.Error, UnicodeDecodeError, ValueError):
        valid = False
    if not valid:
        raise InvalidArgument(
            "page_token is not a next_page_token of this query (same filters, same project)",
            violations=[Violation("page_token", "invalid for this request", "INVALID_PAGE_TOKEN")],
        )
    return int(after)
