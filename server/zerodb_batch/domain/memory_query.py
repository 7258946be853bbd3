"""ListMemories requests: filters and paging checked and turned into query parameters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from zerodb.v1 import memory_pb2
from zerodb_batch import limits
from zerodb_batch.domain import page_token
from zerodb_batch.domain.validate import Checker

_PAGE_FIELDS = ("page_size", "page_token")


@dataclass(frozen=True)
class MemoryQuery:
    """One page's worth of a validated ListMemories request."""

    params: dict[str, object]  # the memory_list parameters, except project_id and limit
    page_size: int
    fingerprint: str  # binds next_page_token to these filters

    def next_token(self, position: page_token.Position) -> str:
        return page_token.encode(position, self.fingerprint)


def parse_list(request: memory_pb2.ListMemoriesRequest) -> MemoryQuery:
    """Check every filter (all violations at once), then the page token against them."""
    c = Checker("")
    if request.memory_type:
        c.choice("memory_type", request.memory_type, limits.MEMORY_TYPES)
    c.tags("tags", request.tags)
    for name in ("session_id", "agent_id", "entity_id"):
        c.text(name, getattr(request, name), limits.MAX_ID_CHARS)
    if request.HasField("min_importance"):
        c.unit_interval("min_importance", request.min_importance)
    start = _time(c, "start_time", request.start_time) if request.HasField("start_time") else None
    end = _time(c, "end_time", request.end_time) if request.HasField("end_time") else None
    if start and end and end <= start:
        c.add("end_time", "must be after start_time", "INVALID_RANGE")
    if request.page_size < 0:
        c.add(
            "page_size", f"must be 0 (meaning {limits.DEFAULT_PAGE_SIZE}) or more", "OUT_OF_RANGE"
        )
    c.raise_if_any("the list request is invalid")
    fingerprint = page_token.query_fingerprint(request, *_PAGE_FIELDS)
    after = page_token.decode(request.page_token, fingerprint) if request.page_token else None
    return MemoryQuery(_params(request, start, end, after), _page_size(request), fingerprint)


def _params(
    r: memory_pb2.ListMemoriesRequest,
    start: datetime | None,
    end: datetime | None,
    after: page_token.Position | None,
) -> dict[str, object]:
    tags = list(r.tags) or None
    match_all = r.tag_match == memory_pb2.TAG_MATCH_ALL
    return {
        "memory_type": r.memory_type or None,
        "tags_any": None if match_all else tags,
        "tags_all": tags if match_all else None,
        "session_id": r.session_id or None,
        "agent_id": r.agent_id or None,
        "entity_id": r.entity_id or None,
        "min_importance": r.min_importance if r.HasField("min_importance") else None,
        "start_time": start,
        "end_time": end,
        "after_time": after[0] if after else None,
        "after_id": after[1] if after else None,
    }


def _page_size(r: memory_pb2.ListMemoriesRequest) -> int:
    # AIP-158: a page size over the maximum is coerced down, not refused.
    return min(r.page_size or limits.DEFAULT_PAGE_SIZE, limits.MAX_PAGE_SIZE)


def _time(c: Checker, name: str, value: timestamp_pb2.Timestamp) -> datetime | None:
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        c.add(name, "is not a valid timestamp (years 1 to 9999)", "INVALID_VALUE")
        return None
