"""Memory records: their rules, and the column arrays a batch upsert writes with `unnest`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zerodb_batch import limits
from zerodb_batch.domain.records import Columns, positions_by
from zerodb_batch.domain.rules import Body, Choice, JsonObject, Number, Rules, Tags, Text

# The values of a valid record, in this order, are what a Rows sink's `add` receives.
MEMORY = Rules(
    "Memory",
    Text("id"),
    Body("content", limits.MAX_CONTENT_BYTES),
    Choice("memory_type", limits.MEMORY_TYPES, default=limits.DEFAULT_MEMORY_TYPE),
    Number("importance", 0.0, 1.0, default=limits.DEFAULT_IMPORTANCE),
    Tags("tags"),
    JsonObject("metadata", limits.MAX_METADATA_BYTES, text="metadata_json"),
    Text("session_id"),
    Text("agent_id"),
    Text("entity_id"),
    keyed=True,
)


def write_order(records: Sequence[Any]) -> list[int]:
    """The records' positions by id, in code-point order: every write of memories takes its
    rows' locks in this order, so writers sharing ids wait for each other and never deadlock
    (see memory_upsert)."""
    return positions_by([r.id for r in records])


@dataclass
class MemoryColumns(Columns):
    """Valid records as parallel arrays (one per column), ready for `unnest`."""

    ids: list[str] = field(default_factory=list)
    contents: list[str] = field(default_factory=list)
    memory_types: list[str] = field(default_factory=list)
    importances: list[float] = field(default_factory=list)
    tags: list[list[str]] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)  # JSON text
    session_ids: list[str | None] = field(default_factory=list)
    agent_ids: list[str | None] = field(default_factory=list)
    entity_ids: list[str | None] = field(default_factory=list)

    def add(
        self, index: int, mid: str, content: str, memory_type: str, importance: float,
        tags: list[str], metadata: str, session_id: str, agent_id: str, entity_id: str,
    ) -> None:  # fmt: skip
        self.index.append(index)
        self.ids.append(mid)
        self.contents.append(content)
        self.memory_types.append(memory_type)
        self.importances.append(importance)
        self.tags.append(tags)
        self.metadata.append(metadata)
        self.session_ids.append(session_id or None)  # an empty scope is no scope (NULL)
        self.agent_ids.append(agent_id or None)
        self.entity_ids.append(entity_id or None)
