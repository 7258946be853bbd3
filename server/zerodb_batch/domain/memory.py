"""Memory records: validating a batch and turning it into column arrays for set-based SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from zerodb.v1 import memory_pb2
from zerodb_batch import limits
from zerodb_batch.domain.validate import Checker, metadata_json
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
    batch = ParsedBatch(MemoryColumns(), {}, set())
    seen: dict[str, int] = {}
    for i, record in enumerate(records):
        # The fast path takes almost every record; the Checker runs only to explain a failure.
        if record.id and seen.setdefault(record.id, i) != i:
            _explain(batch, i, record, field_name, duplicate_of=seen[record.id])
        elif not _append_if_valid(batch.rows, i, record):
            _explain(batch, i, record, field_name)
        elif not record.id:
            batch.generated.add(i)
    if batch.failures and not partial:
        raise InvalidArgument(
            f"{len(batch.failures)} of {len(records)} {field_name} are invalid; "
            "nothing was written",
            violations=[v for vs in batch.failures.values() for v in vs],
        )
    return batch


_FAST_TEXT = limits.MAX_CONTENT_BYTES // 4  # this many characters cannot exceed the byte limit


def _append_if_valid(rows: MemoryColumns, i: int, r: memory_pb2.Memory) -> bool:
    """Append the record if cheap checks pass; the hot loop of every memory write."""
    rid, content, mtype = r.id, r.content, r.memory_type
    session, agent, entity = r.session_id, r.agent_id, r.entity_id
    tags = list(r.tags)
    importance = r.importance if r.HasField("importance") else limits.DEFAULT_IMPORTANCE
    if (
        len(content) > _FAST_TEXT
        or (mtype and mtype not in limits.MEMORY_TYPES)
        or not 0.0 <= importance <= 1.0
        or (
            tags
            and (
                len(tags) > limits.MAX_TAGS
                or not min(map(len, tags)) > 0
                or max(map(len, tags)) > limits.MAX_TAG_CHARS
            )
        )
        or max(len(rid), len(session), len(agent), len(entity)) > limits.MAX_ID_CHARS
        or "\x00" in "".join((rid, content, session, agent, entity, *tags))
    ):
        return False
    metadata = metadata_json(r.metadata)
    if metadata is None:
        return False
    rows.index.append(i)
    rows.ids.append(rid or str(uuid.uuid4()))
    rows.contents.append(content)
    rows.memory_types.append(mtype or limits.DEFAULT_MEMORY_TYPE)
    rows.importances.append(importance)
    rows.tags.append(tags)
    rows.metadata.append(metadata)
    rows.session_ids.append(session or None)
    rows.agent_ids.append(agent or None)
    rows.entity_ids.append(entity or None)
    return True


def _explain(
    batch: ParsedBatch, i: int, r: memory_pb2.Memory, field_name: str, duplicate_of: int = -1
) -> None:
    """Record why record i is refused, every violation of it."""
    checker = Checker(f"{field_name}[{i}]")
    _check(checker, r)
    if duplicate_of >= 0:
        checker.add("id", f"duplicates {field_name}[{duplicate_of}].id", "DUPLICATE_ID")
    batch.failures[i] = checker.violations


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
