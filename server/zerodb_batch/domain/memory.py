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

    def add(
        self, index: int, mid: str, content: str, memory_type: str, importance: float,
        tags: list[str], metadata: str, session_id: str, agent_id: str, entity_id: str,
    ) -> None:  # fmt: skip
        """Append one valid record, applying the defaults (new UUID, episodic)."""
        self.index.append(index)
        self.ids.append(mid or str(uuid.uuid4()))
        self.contents.append(content)
        self.memory_types.append(memory_type or limits.DEFAULT_MEMORY_TYPE)
        self.importances.append(importance)
        self.tags.append(tags)
        self.metadata.append(metadata)
        self.session_ids.append(session_id or None)
        self.agent_ids.append(agent_id or None)
        self.entity_ids.append(entity_id or None)


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
        duplicate_of = seen.setdefault(record.id, i) if record.id else i
        # The fast path takes almost every record; the Checker decides the rest, and explains.
        if duplicate_of != i or not _append_if_valid(batch.rows, i, record):
            _check_fully(batch, i, record, field_name, duplicate_of)
        if not record.id and i not in batch.failures:
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
    rows.add(i, rid, content, mtype, importance, tags, metadata, session, agent, entity)
    return True


def _append(rows: MemoryColumns, i: int, r: memory_pb2.Memory, metadata: str) -> None:
    importance = r.importance if r.HasField("importance") else limits.DEFAULT_IMPORTANCE
    rows.add(
        i, r.id, r.content, r.memory_type, importance, list(r.tags), metadata,
        r.session_id, r.agent_id, r.entity_id,
    )  # fmt: skip


def _check_fully(
    batch: ParsedBatch, i: int, r: memory_pb2.Memory, field_name: str, duplicate_of: int
) -> None:
    """Every rule, for a record the fast path did not take: append it or record its violations."""
    checker = Checker(f"{field_name}[{i}]")
    metadata = _check(checker, r)
    if duplicate_of != i:
        checker.add("id", f"duplicates {field_name}[{duplicate_of}].id", "DUPLICATE_ID")
    if checker.violations:
        batch.failures[i] = checker.violations
    else:  # valid after all (e.g. long content within the byte limit)
        _append(batch.rows, i, r, metadata)


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
