"""The memories table: set-based upsert, update and delete, reads by id and by page, COPY loads.

Every write takes its row locks in id order (the batch statements sort by id), so concurrent
batches over overlapping ids wait for each other instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg.rows import class_row

from zerodb.v1 import memory_pb2
from zerodb_batch.domain.memory import MEMORY, MemoryColumns, write_order
from zerodb_batch.domain.memory_update import UPDATABLE, UpdateColumns
from zerodb_batch.storage.copy_text import NULL, CopyLines, field, text_array
from zerodb_batch.storage.loads import IdExists, RetryChunk
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.queries import Q
from zerodb_batch.storage.unnest import column, flat_tags

Cursor = psycopg.AsyncCursor[tuple[object, ...]]


@dataclass(frozen=True)
class MemoryRow:
    """A memory as memory_get and memory_list return it."""

    id: str
    content: str
    memory_type: str
    importance: float
    tags: list[str]
    metadata: dict[str, Any]
    session_id: str | None
    agent_id: str | None
    entity_id: str | None
    create_time: datetime
    update_time: datetime


async def send_upsert(conn: Conn, project_id: str, rows: MemoryColumns) -> Cursor | None:
    """Write every row in one statement; in pipeline mode, without waiting for the server.

    Pass the cursor to upsert_sent() for the result (None: nothing to write).
    """
    if not rows:
        return None
    params = {
        "project_id": project_id,
        "ids": rows.ids,
        "contents": rows.contents,
        "memory_types": rows.memory_types,
        "importances": rows.importances,
        **flat_tags(rows.tags),
        "metadata": rows.metadata,
        "session_ids": column(rows.session_ids),
        "agent_ids": column(rows.agent_ids),
        "entity_ids": column(rows.entity_ids),
    }
    return await conn.execute(Q["memory_upsert"], params)


async def upsert_sent(cur: Cursor | None) -> dict[str, bool]:
    """The result of send_upsert(): id -> True if inserted, False if updated."""
    if cur is None:
        return {}
    return {row[0]: row[1] for row in await cur.fetchall()}  # type: ignore[misc]


async def get(conn: Conn, project_id: str, ids: list[str]) -> dict[str, MemoryRow]:
    found = await _rows(conn, Q["memory_get"], {"project_id": project_id, "ids": ids})
    return {row.id: row for row in found}


async def send_update(conn: Conn, project_id: str, rows: UpdateColumns) -> Cursor | None:
    """Apply the rows' updates in one statement (its rows locked in id order); in pipeline mode,
    without waiting for the server. Pass the cursor to missing() for the ids that named no
    memory (None: nothing to write)."""
    if not rows:
        return None
    return await conn.execute(Q["memory_update"], update_params(project_id, rows))


def update_params(project_id: str, rows: UpdateColumns) -> dict[str, object]:
    """memory_update's parameters. A column no update sets goes as NULL arrays, which `unnest`
    pads with NULLs (a NULL flag keeps the value): most updates set a field or two, and eight
    arrays of 500 NULLs and falses cost more to send than the statement takes to run."""
    params: dict[str, object] = {"project_id": project_id, "ids": rows.ids}
    for name in UPDATABLE:
        flags, values = rows.column(name) or (None, None)
        params[f"set_{name}"] = flags
        if name != "tags":
            params[name] = values
        elif values is None:
            params.update(tag_values=None, tag_from=None, tag_to=None)
        else:
            params.update(flat_tags([tags or [] for tags in values]))  # type: ignore[misc]
    return params


async def delete(conn: Conn, project_id: str, ids: list[str]) -> set[str]:
    """Delete in one statement (its rows locked in id order); the ids that named a memory."""
    params: dict[str, object] = {"project_id": project_id, "ids": ids}
    cur = await conn.execute(Q["memory_delete"], params)
    return set(ids).difference(await missing(cur))


async def missing(cur: Cursor | None) -> list[str]:
    """What an update or delete statement answers: the ids it was given that named no memory."""
    if cur is None:
        return []
    row = await cur.fetchone()
    assert row is not None  # an ARRAY() subquery always makes a row
    return row[0]  # type: ignore[return-value]


async def list_page(
    conn: Conn, project_id: str, filters: dict[str, object], limit: int
) -> list[MemoryRow]:
    """Up to `limit` memories matching `filters`, newest first (see memory_list)."""
    params = {**filters, "project_id": project_id, "limit": limit}
    # Unprepared, so every run is planned with its values and the unset filters fold away.
    return await _rows(conn, Q["memory_list"], params, prepare=False)


async def _rows(
    conn: Conn, query: LiteralString, params: dict[str, object], prepare: bool | None = None
) -> list[MemoryRow]:
    async with conn.cursor(row_factory=class_row(MemoryRow)) as cur:
        await cur.execute(query, params, prepare=prepare)
        return await cur.fetchall()


class MemoryCopyRows(CopyLines):
    """Valid memory records as lines for `memory_copy` and `memory_stage_copy` (same columns)."""

    __slots__ = ("_prefix",)

    def __init__(self, project_id: str) -> None:
        super().__init__()
        self._prefix = field(project_id) + "\t"  # the first column of every row

    def add(
        self, index: int, mid: str, content: str, memory_type: str, importance: float,
        tags: list[str], metadata: str, session_id: str, agent_id: str, entity_id: str,
    ) -> None:  # fmt: skip
        # memory_type is one of a fixed set; metadata is JSON text, compact when made from a
        # Struct, as the client wrote it when sent as metadata_json (newlines and all).
        # One scan of every text value at once: almost every record has nothing to escape.
        plain = f"{mid}{content}{metadata}{session_id}{agent_id}{entity_id}"
        if "\\" in plain or "\t" in plain or "\n" in plain or "\r" in plain:
            mid, content, metadata = field(mid), field(content), field(metadata)
            session_id, agent_id, entity_id = field(session_id), field(agent_id), field(entity_id)
        self.lines.append(
            f"{self._prefix}{mid}\t{content}\t{memory_type}\t{importance!r}\t{text_array(tags)}\t"
            f"{metadata}\t{session_id or NULL}\t{agent_id or NULL}\t{entity_id or NULL}\n"
        )


async def copy_insert(
    conn: Conn, rows: CopyLines, copying: Callable[[], object] = lambda: None
) -> None:
    """Insert a chunk of new memories by COPY, all or nothing (IdExists if one exists).

    `copying` is called once PostgreSQL has accepted the COPY, as the rows start to go out.
    """
    if not rows:
        return
    try:
        await rows.copy(conn, Q["memory_copy"], copying)
    except psycopg.errors.UniqueViolation as e:
        raise IdExists from e


async def copy_upsert(conn: Conn, rows: CopyLines) -> tuple[int, int]:
    """Upsert a chunk: COPY into a staging table, then one INSERT ... ON CONFLICT.

    Must run inside a transaction (the staging table empties at commit). Returns
    (inserted, updated).
    """
    if not rows:
        return 0, 0
    await conn.execute(Q["memory_stage_create"])
    await rows.copy(conn, Q["memory_stage_copy"])
    cur = await conn.execute(Q["memory_stage_upsert"])
    counted = await cur.fetchone()
    assert counted is not None  # an aggregate always returns a row
    inserted, written = int(counted[0]), int(counted[1])  # type: ignore[call-overload]
    return inserted, written - inserted


class MemoryLoadWriter:
    """StreamUpsertMemories' writer for the load engine.

    While every record of the stream has been new, a chunk goes by COPY straight into the table;
    the first chunk that meets an existing id is rolled back and written again through the
    staging table, as is every later chunk of the stream.
    """

    kind = "memories"
    rules = MEMORY
    records_field = "records"
    response_type = memory_pb2.StreamUpsertMemoriesResponse

    def __init__(self) -> None:
        self._all_new = True

    def check(self, chunk: memory_pb2.StreamUpsertMemoriesRequest) -> None:
        pass  # a memory chunk has no fields beyond the engine's

    def rows(self, chunk: memory_pb2.StreamUpsertMemoriesRequest) -> MemoryCopyRows:
        return MemoryCopyRows(chunk.project_id)

    def order(self, chunk: memory_pb2.StreamUpsertMemoriesRequest) -> list[int]:
        return write_order(chunk.records)

    async def write(
        self, conn: Conn, rows: MemoryCopyRows, started: Callable[[], object]
    ) -> tuple[int, int]:
        if self._all_new:
            try:
                await copy_insert(conn, rows, copying=started)
            except IdExists:
                self._all_new = False
                raise RetryChunk from None
            return len(rows), 0
        started()  # nothing to wait for: validation of the next chunk may go on
        return await copy_upsert(conn, rows)
