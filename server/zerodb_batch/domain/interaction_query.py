"""ListInteractions and ExportInteractions requests: the filters they share, paging and the export
format, checked and turned into query parameters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from zerodb.v1 import rlhf_pb2
from zerodb_batch import limits
from zerodb_batch.domain.page_token import PageTokens, Position, page_size
from zerodb_batch.domain.timestamps import from_micros, optional_datetime, to_micros
from zerodb_batch.domain.validate import Checker

# A page ends at the (create_time in microseconds, id) of its last interaction.
POSITION_SHAPE = (int, str)


@dataclass(frozen=True)
class InteractionPage:
    """One page's worth of a validated ListInteractions request."""

    params: dict[str, object]  # the interaction_list parameters, except project_id and limit
    page_size: int


@dataclass(frozen=True)
class InteractionExport:
    """A validated ExportInteractions request."""

    format: str  # one of limits.EXPORT_FORMATS
    params: dict[str, object]  # the filters, as for a list

    @property
    def pairs(self) -> bool:
        """Whether the format is one of preference pairs (made among the same prompt's rows)."""
        return self.format in ("trl", "openai-preference")


def position(create_time: datetime, interaction_id: str) -> Position:
    """Where a page that ends with this interaction ends."""
    return to_micros(create_time), interaction_id


def parse_list(request: rlhf_pb2.ListInteractionsRequest, tokens: PageTokens) -> InteractionPage:
    """Check every filter (all violations at once), then the page token against them."""
    c = Checker("")
    params = _filters(c, request)
    size = page_size(c, request.page_size, limits.DEFAULT_INTERACTIONS_PAGE_SIZE)
    c.raise_if_any("the list request is invalid")
    after = tokens.decode(request, POSITION_SHAPE)
    params["after_time"] = from_micros(int(after[0])) if after else None
    params["after_id"] = after[1] if after else None
    return InteractionPage(params, size)


def parse_export(request: rlhf_pb2.ExportInteractionsRequest) -> InteractionExport:
    c = Checker("")
    params = _filters(c, request)
    chosen = request.format or "jsonl"
    c.choice("format", chosen, limits.EXPORT_FORMATS)
    c.raise_if_any("the export request is invalid")
    return InteractionExport(chosen, params)


def _filters(c: Checker, r: Any) -> dict[str, object]:
    """The filters both requests have (the same names), as query parameters; unset ones None."""
    if r.feedback:
        c.choice("feedback", r.feedback, limits.FEEDBACK)
    c.text("model", r.model, limits.MAX_MODEL_CHARS)
    for name in ("session_id", "agent_id"):
        c.text(name, getattr(r, name), limits.MAX_ID_CHARS)
    c.tags("tags", r.tags)
    low = _reward(c, r, "reward_min")
    high = _reward(c, r, "reward_max")
    if low is not None and high is not None and high < low:
        c.add("reward_max", "must not be below reward_min", "INVALID_RANGE")
    start = optional_datetime(c, r, "start_time")
    end = optional_datetime(c, r, "end_time")
    if start and end and end <= start:
        c.add("end_time", "must be after start_time", "INVALID_RANGE")
    return {
        "feedback": r.feedback or None,
        "model": r.model or None,
        "session_id": r.session_id or None,
        "agent_id": r.agent_id or None,
        "tags": list(r.tags) or None,
        "reward_min": low,
        "reward_max": high,
        "start_time": start,
        "end_time": end,
    }


def _reward(c: Checker, r: Any, name: str) -> float | None:
    if not r.HasField(name):
        return None
    value: float = getattr(r, name)
    c.unit_interval(name, value, -1.0, 1.0)
    return value
