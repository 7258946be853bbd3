"""Memory records: validating a batch and turning it into column arrays for set-based SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from zerodb.v1 import memory_pb2
from zerodb_batch import limits
from zerodb_batch.domain.validate import Checker, metadata_json
from zerodb_batch.errors import InvalidArgument, Violation


class Rows(Protocol):
    """Where the parser puts valid records: the form the storage layer writes them in."""

    def __len__(self) -> int: ...

    def add(
        self, index: int, mid: str, content: str, memory_type: str, importance: float,
        tags: list[str], metadata: str, session_id: str, agent_id: str, entity_id: str,
    ) -> None:  # fmt: skip
        """Append one valid record, defaults applied; empty scopes mean NULL."""
        ...


R = TypeVar("R", bound=Rows)


@dataclass
class MemoryColumns:
    """Valid records as parallel arrays (one per column), ready for `unnest`."""

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

    def since(self, start: int) -> MemoryColumns:
        """The rows from position `start` on, as columns of their own."""
        s = slice(start, None)
        return MemoryColumns(
            self.index[s], self.ids[s], self.contents[s], self.memory_types[s],
            self.importances[s], self.tags[s], self.metadata[s], self.session_ids[s],
            self.agent_ids[s], self.entity_ids[s],
        )  # fmt: skip

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
        self.session_ids.append(session_id or None)
        self.agent_ids.append(agent_id or None)
        self.entity_ids.append(entity_id or None)


@dataclass
class ParsedBatch(Generic[R]):
    """The valid rows of a batch and, by request index, the violations of each invalid record."""

    rows: R
    failures: dict[int, list[Violation]]
    generated: set[int]  # indexes whose id the server generated


class RecordParser(Generic[R]):
    """Validates a batch a slice at a time, so each slice can be written while the next parses.

    Duplicate ids are caught across slices. `finish()` gives the whole batch; in atomic mode it
    raises INVALID_ARGUMENT listing every violation, so the caller must not commit before it.
    """

    def __init__(
        self, records: Sequence[memory_pb2.Memory], rows: R, *, field_name: str, partial: bool
    ) -> None:
        self._records, self._field_name, self._partial = records, field_name, partial
        self._seen: dict[str, int] = {}
        self._parsed = 0  # records validated so far
        self.batch = ParsedBatch(rows, {}, set())

    @property
    def writable(self) -> bool:
        """False once an atomic batch has an invalid record: nothing of it will be written."""
        return self._partial or not self.batch.failures

    @property
    def parsed(self) -> int:
        """How many records have been validated."""
        return self._parsed

    def parse(self, stop: int) -> None:
        """Validate the records up to index `stop`, adding the valid ones to the rows."""
        batch, seen = self.batch, self._seen
        for i in range(self._parsed, stop):
            record = self._records[i]
            rid = record.id  # every read of a message field builds a new str: once per record
            duplicate_of = seen.setdefault(rid, i) if rid else i
            # The fast path takes almost every record; the Checker decides the rest, and explains.
            if duplicate_of != i or not _append_if_valid(batch.rows, i, record, rid):
                _check_fully(batch, i, record, self._field_name, duplicate_of)
            if not rid and i not in batch.failures:
                batch.generated.add(i)
        self._parsed = max(self._parsed, stop)

    def finish(self) -> ParsedBatch[R]:
        assert self._parsed == len(self._records), "finish() before every record was parsed"
        if not self.writable:
            raise InvalidArgument(
                f"{len(self.batch.failures)} of {len(self._records)} {self._field_name} are "
                "invalid; nothing was written",
                violations=[v for vs in self.batch.failures.values() for v in vs],
            )
        return self.batch


_FAST_TEXT = limits.MAX_CONTENT_BYTES // 4  # this many characters cannot exceed the byte limit
# The limits as module globals: the fast path below runs once per record of every write.
_TYPES, _DEFAULT_TYPE = frozenset(limits.MEMORY_TYPES), limits.DEFAULT_MEMORY_TYPE
_MAX_TAGS, _MAX_TAG, _MAX_ID = limits.MAX_TAGS, limits.MAX_TAG_CHARS, limits.MAX_ID_CHARS
_DEFAULT_IMPORTANCE = limits.DEFAULT_IMPORTANCE


def _append_if_valid(rows: Rows, i: int, r: memory_pb2.Memory, rid: str) -> bool:
    """Append the record (whose id is `rid`) if cheap checks pass; the hot loop of every write."""
    content, mtype = r.content, r.memory_type
    session, agent, entity = r.session_id, r.agent_id, r.entity_id
    tags = list(r.tags)
    importance = r.importance
    if importance == 0.0 and not r.HasField("importance"):  # one call for the usual record
        importance = _DEFAULT_IMPORTANCE
    if (
        len(content) > _FAST_TEXT
        or (mtype and mtype not in _TYPES)
        or not 0.0 <= importance <= 1.0
        or (tags and (len(tags) > _MAX_TAGS or "" in tags or max(map(len, tags)) > _MAX_TAG))
        or max(len(rid), len(session), len(agent), len(entity)) > _MAX_ID
        or "\x00" in "".join((rid, content, session, agent, entity, *tags))
    ):
        return False
    metadata = metadata_json(r.metadata)
    if metadata is None:
        return False
    _add(rows, i, rid, content, mtype, importance, tags, metadata, session, agent, entity)
    return True


def _add(
    rows: Rows, i: int, rid: str, content: str, mtype: str, importance: float, tags: list[str],
    metadata: str, session: str, agent: str, entity: str,
) -> None:  # fmt: skip
    """A valid record into the rows, with the defaults for an empty id (a new UUID) and type."""
    mid = rid or str(uuid.uuid4())
    rows.add(
        i, mid, content, mtype or _DEFAULT_TYPE, importance, tags, metadata, session, agent, entity
    )


def _append(rows: Rows, i: int, r: memory_pb2.Memory, metadata: str) -> None:
    importance = r.importance if r.HasField("importance") else _DEFAULT_IMPORTANCE
    _add(
        rows, i, r.id, r.content, r.memory_type, importance, list(r.tags), metadata,
        r.session_id, r.agent_id, r.entity_id,
    )  # fmt: skip


def _check_fully(
    batch: ParsedBatch[R], i: int, r: memory_pb2.Memory, field_name: str, duplicate_of: int
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
