"""Events: validating a publish batch, topic filters, and stream positions (`<ms>-<seq>` ids).

Every event of a project has a sequence number (1, 2, 3, ... without gaps) and a publish time in
whole milliseconds; its Redis stream entry id is `<publish ms>-<seq>`. So the id of any event is
known without asking Redis, ids grow with seq, and a subscriber can tell from two consecutive
entries whether the stream skipped some (trimmed by retention) and fetch those from PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from zerodb.v1 import event_pb2
from zerodb_batch import limits
from zerodb_batch.domain.validate import Checker, metadata_json
from zerodb_batch.errors import InvalidArgument, Violation

_NAME = re.compile(r"[A-Za-z0-9._:\-]+")
_STREAM_ID = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_U64 = 2**64 - 1


@dataclass
class EventColumns:
    """Valid events as parallel arrays, ready for `unnest`."""

    index: list[int] = field(default_factory=list)  # position of each event in the request
    topics: list[str] = field(default_factory=list)
    payloads: list[str] = field(default_factory=list)  # JSON text

    def __len__(self) -> int:
        return len(self.topics)


@dataclass
class ParsedEvents:
    rows: EventColumns
    failures: dict[int, list[Violation]]


def parse_events(events: Sequence[event_pb2.Event], *, partial: bool) -> ParsedEvents:
    """Validate every event; an atomic batch raises INVALID_ARGUMENT listing every violation."""
    rows, failures = EventColumns(), dict[int, list[Violation]]()
    for i, event in enumerate(events):
        # The fast path takes almost every event; the Checker decides the rest, and explains.
        valid = _valid_fast(event) or _check_fully(f"events[{i}]", event, failures, i)
        if valid:
            rows.index.append(i)
            rows.topics.append(valid[0])
            rows.payloads.append(valid[1])
    if failures and not partial:
        raise InvalidArgument(
            f"{len(failures)} of {len(events)} events are invalid; nothing was published",
            violations=[v for vs in failures.values() for v in vs],
        )
    return ParsedEvents(rows, failures)


def _valid_fast(event: event_pb2.Event) -> tuple[str, str] | None:
    """(topic, payload JSON) if cheap checks pass, else None."""
    topic = event.topic
    if len(topic) > limits.MAX_TOPIC_CHARS or not _NAME.fullmatch(topic):
        return None
    # metadata_json applies the metadata limit, which is also the payload limit (64 KiB).
    payload = metadata_json(event.event_payload)
    return None if payload is None else (topic, payload)


def _check_fully(
    path: str, event: event_pb2.Event, failures: dict[int, list[Violation]], i: int
) -> tuple[str, str] | None:
    checker = Checker(path)
    check_name(checker, "topic", event.topic, limits.MAX_TOPIC_CHARS)
    payload = checker.json_object(
        "event_payload", event.event_payload, limits.MAX_EVENT_PAYLOAD_BYTES
    )
    if checker.violations:
        failures[i] = checker.violations
        return None
    return event.topic, payload


def check_name(checker: Checker, name: str, value: str, max_chars: int) -> None:
    """A topic or consumer group: 1-max characters of letters, digits, `.`, `_`, `:`, `-`."""
    if not value:
        checker.add(name, "is required", "REQUIRED")
    elif len(value) > max_chars:
        checker.add(name, f"at most {max_chars} characters, got {len(value)}", "TOO_LONG")
    elif not _NAME.fullmatch(value):
        checker.add(
            name, "only letters, digits, '.', '_', ':' and '-' are allowed", "INVALID_CHARACTER"
        )


class StoredEvent(NamedTuple):
    """An event as PostgreSQL holds it (the column names of the events queries)."""

    seq: int
    id: str  # a UUID
    topic: str
    payload: str  # JSON text
    publish_time: datetime

    @property
    def position(self) -> Position:
        return Position(epoch_ms(self.publish_time), self.seq)


@dataclass(frozen=True, order=True)
class Position:
    """A place in a project's stream: the entry id `<ms>-<seq>`, compared as Redis does."""

    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    @classmethod
    def parse(cls, text: str) -> Position | None:
        """A stream id (`ms-seq`, or `ms` meaning `ms-0`), or None if it is not one."""
        match = _STREAM_ID.fullmatch(text)
        if match is None:
            return None
        ms, seq = int(match[1]), int(match[2] or 0)
        return cls(ms, seq) if ms <= _U64 and seq <= _U64 else None


def epoch_ms(value: datetime) -> int:
    """Whole milliseconds since the epoch, exactly (no float rounding)."""
    return (value - _EPOCH) // _MS


def from_epoch_ms(ms: int) -> datetime:
    return _EPOCH + ms * _MS


class TopicFilter:
    """Exact topics and `prefix.*` patterns; an empty filter matches every topic."""

    __slots__ = ("exact", "prefixes")

    def __init__(self, exact: frozenset[str], prefixes: tuple[str, ...]) -> None:
        self.exact = exact
        self.prefixes = prefixes

    @classmethod
    def parse(cls, filters: Mapping[str, str]) -> TopicFilter:
        """Check each filter, keyed by its field path (`topics[2]`); INVALID_ARGUMENT if bad."""
        checker = Checker("")
        exact: set[str] = set()
        prefixes: list[str] = []
        for path, text in filters.items():
            if text.endswith(".*"):
                check_name(checker, path, text[:-2], limits.MAX_TOPIC_CHARS - 1)
                prefixes.append(text[:-1])  # keep the dot: `agent.*` must not match `agents`
            else:
                check_name(checker, path, text, limits.MAX_TOPIC_CHARS)
                exact.add(text)
        checker.raise_if_any("invalid topic filter: use an exact topic or a `prefix.*` pattern")
        return cls(frozenset(exact), tuple(prefixes))

    def matches(self, topic: str) -> bool:
        if not self.exact and not self.prefixes:
            return True
        return topic in self.exact or topic.startswith(self.prefixes)
