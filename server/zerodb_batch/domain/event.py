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
from zerodb_batch.domain.records import ParsedBatch, RecordParser
from zerodb_batch.domain.rules import JsonObject, Name, Rules, check_name
from zerodb_batch.domain.validate import Checker

_STREAM_ID = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_MAX_SEQ = 2**63 - 1  # PostgreSQL's bigint
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last time a datetime holds


# The values of a valid event, in this order, are what EventColumns.add receives.
EVENT = Rules(
    "Event",
    Name("topic", limits.MAX_TOPIC_CHARS),
    JsonObject("event_payload", limits.MAX_EVENT_PAYLOAD_BYTES),
)


@dataclass
class EventColumns:
    """Valid events as parallel arrays, ready for `unnest`."""

    index: list[int] = field(default_factory=list)  # position of each event in the request
    topics: list[str] = field(default_factory=list)
    payloads: list[str] = field(default_factory=list)  # JSON text

    def __len__(self) -> int:
        return len(self.topics)

    def add(self, index: int, topic: str, payload: str) -> None:
        self.index.append(index)
        self.topics.append(topic)
        self.payloads.append(payload)


def parse_events(events: Sequence[event_pb2.Event], *, partial: bool) -> ParsedBatch[EventColumns]:
    """Validate every event; an atomic batch raises INVALID_ARGUMENT listing every violation."""
    parser = RecordParser(events, EVENT, EventColumns(), field_name="events", partial=partial)
    return parser.parse_all()


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
        return entry_id(self.ms, self.seq)

    @classmethod
    def parse(cls, text: str) -> Position | None:
        """A stream id (`ms-seq`, or `ms` meaning `ms-0`), or None if it is not one."""
        match = _STREAM_ID.fullmatch(text)
        if match is None:
            return None
        ms, seq = int(match[1]), int(match[2] or 0)
        return cls(ms, seq) if ms <= _MAX_MS and seq <= _MAX_SEQ else None


def entry_id(ms: int, seq: int) -> str:
    """The stream entry id of an event: `<publish ms>-<seq>`."""
    return f"{ms}-{seq}"


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

    def canonical(self) -> list[str]:
        """The filter as sorted, unique filter texts (`agent.*` as typed); [] for every topic."""
        return sorted({*self.exact, *(p + "*" for p in self.prefixes)})

    def matches(self, topic: str) -> bool:
        if not self.exact and not self.prefixes:
            return True
        return topic in self.exact or topic.startswith(self.prefixes)
