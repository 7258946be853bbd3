"""Memory records: validating a batch and turning it into column arrays for set-based SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from zerodb.v1 import memory_pb2
from zerodb_batch import limits
from zerodb_batch.domain.validate import Checker
from zerodb_batch.errors import InvalidArgument, Violation


@dataclass
class MemoryColumns:
    """Valid records as parallel arrays (one per column), ready for `unnest` or `COPY`."""

    index: list[int] = field(default_factory=list)  # position of each row in the request
    ids: list[str] = field(default_factory=list)
    contents: list[str] = field(default_factory=list)
    memory_types: list[str] = field(default_factory=list)
    importances: list[float] = field(default_factory=list)
    tags: list[list[str]] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)  # JSON text
    session_ids: list[str | None] = field(default_factory=list)
    agent_ids: list[str | None] = field(default_factory=list)
    entity_ids: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class ParsedBatch:
    """The valid rows of a batch and, by request index, the violations of each invalid record."""

    rows: MemoryColumns
    failures: dict[int, list[Violation]]
    generated: set[int]  # indexes whose id the server generated


def parse_records(
    records: Sequence[memory_pb2.Memory], *, field_name: str, partial: bool
) -> ParsedBatch:
    """Validate every record; atomic batches raise INVALID_ARGUMENT listing every violation."""
    rows, failures, generated = MemoryColumns(), {}, set()
    seen: dict[str, int] = {}
    for i, record in enumerate(records):
        checker = Checker(f"{field_name}[{i}]")
        metadata = _check(checker, record)
        if record.id:
            first = seen.setdefault(record.id, i)
            if first != i:
                checker.add("id", f"duplicates {field_name}[{first}].id", "DUPLICATE_ID")
        if checker.violations:
            failures[i] = checker.violations
            continue
        if not record.id:
            generated.add(i)
        _append(rows, i, record, metadata)
    if failures and not partial:
        raise InvalidArgument(
            f"{len(failures)} of {len(records)} {field_name} are invalid; nothing was written",
            violations=[v for vs in failures.values() for v in vs],
        )
    return ParsedBatch(rows, failures, generated)


def _check(c: Checker, r: memory_pb2.Memory) -> str:
    c.text("id", r.id, limits.MAX_ID_CHARS)
    c.body("content", r.content, limits.MAX_CONTENT_BYTES)
    if r.memory_type:
        c.choice("memory_type", r.memory_type, limits.MEMORY_TYPES)
    if r.HasField("importance"):
        c.unit_interval("importance", r.importance)
    c.tags("tags", r.tags)
    c.text("session_id", r.session_id, limits.MAX_ID_CHARS)
    c.text("agent_id", r.agent_id, limits.MAX_ID_CHARS)
    c.text("entity_id", r.entity_id, limits.MAX_ID_CHARS)
    return c.json_object("metadata", r.metadata, limits.MAX_METADATA_BYTES)


def _append(rows: MemoryColumns, i: int, r: memory_pb2.Memory, metadata: str) -> None:
    rows.index.append(i)
    rows.ids.append(r.id or str(uuid.uuid4()))
    rows.contents.append(r.content)
    rows.memory_types.append(r.memory_type or limits.DEFAULT_MEMORY_TYPE)
    rows.importances.append(r.importance if r.HasField("importance") else limits.DEFAULT_IMPORTANCE)
    rows.tags.append(list(r.tags))
    rows.metadata.append(metadata)
    rows.session_ids.append(r.session_id or None)
    rows.agent_ids.append(r.agent_id or None)
    rows.entity_ids.append(r.entity_id or None)
