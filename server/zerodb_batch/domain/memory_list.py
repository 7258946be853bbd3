"""ListMemories requests: filters and paging checked and turned into query parameters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from zerodb.v1 import memory_pb2
from zerodb_batch import limits
from zerodb_batch.domain.page_token import PageTokens, page_size
from zerodb_batch.domain.timestamps import from_micros, optional_datetime, to_micros
from zerodb_batch.domain.validate import Checker

# A page ends at the (create_time in microseconds, id) of its last memory.
POSITION_SHAPE = (int, str)


@dataclass(frozen=True)
class MemoryQuery:
    """One page's worth of a validated ListMemories request."""

    params: dict[str, object]  # the memory_list parameters, except project_id and limit
    page_size: int


def position(create_time: datetime, memory_id: str) -> tuple[int, str]:
    """Where a page that ends with this memory ends."""
    return to_micros(create_time), memory_id


def parse_list(request: memory_pb2.ListMemoriesRequest, tokens: PageTokens) -> MemoryQuery:
    """Check every filter (all violations at once), then the page token against them."""
    c = Checker("")
    if request.memory_type:
        c.choice("memory_type", request.memory_type, limits.MEMORY_TYPES)
    c.tags("tags", request.tags)
    for name in ("session_id", "agent_id", "entity_id"):
        c.text(name, getattr(request, name), limits.MAX_ID_CHARS)
    if request.HasField("min_importance"):
        c.unit_interval("min_importance", request.min_importance)
    start = optional_datetime(c, request, "start_time")
    end = optional_datetime(c, request, "end_time")
    if start and end and end <= start:
        c.add("end_time", "must be after start_time", "INVALID_RANGE")
    size = page_size(c, request.page_size, limits.DEFAULT_PAGE_SIZE)
    c.raise_if_any("the list request is invalid")
    after = tokens.decode(request, POSITION_SHAPE)
    return MemoryQuery(_params(request, start, end, after), size)


def _params(
    r: memory_pb2.ListMemoriesRequest,
    start: datetime | None,
    end: datetime | None,
    after: tuple[int | str, ...] | None,
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
        "after_time": from_micros(int(after[0])) if after else None,
        "after_id": after[1] if after else None,
    }
