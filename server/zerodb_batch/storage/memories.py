"""The memories table: set-based upsert, update and delete, reads by id and by page, COPY loads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import psycopg

from zerodb_batch.domain.memory import MemoryColumns
from zerodb_batch.domain.memory_update import UPDATABLE, UpdateColumns
from zerodb_batch.storage.copy_text import MemoryCopyRows
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.queries import Q

Cursor = psycopg.AsyncCursor[tuple[object, ...]]

# Column order of memory_get, shared with the api layer's row -> message conversion.
MemoryRow = tuple[
    str,
    str,
    str,
    float,
    list[str],
    dict[str, Any],
    str | None,
    str | None,
    str | None,
    datetime,
    datetime,
]


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
        **_flat_tags(rows.tags),
        "metadata": rows.metadata,
        "session_ids": rows.session_ids,
        "agent_ids": rows.agent_ids,
        "entity_ids": rows.entity_ids,
    }
    return await conn.execute(Q["memory_upsert"], params)


async def upsert_sent(cur: Cursor | None) -> dict[str, bool]:
    """The result of send_upsert(): id -> True if inserted, False if updated."""
    if cur is None:
        return {}
    return {row[0]: row[1] for row in await cur.fetchall()}  # type: ignore[misc]


def _flat_tags(tags: list[list[str]]) -> dict[str, list[Any]]:
    """All records' tags in one array plus each record's slice: no per-record encoding."""
    values: list[str] = []
    starts, ends = [], []
    for record_tags in tags:
        starts.append(len(values) + 1)
        values.extend(record_tags)
        ends.append(len(values))
    return {"tag_values": values, "tag_from": starts, "tag_to": ends}


async def get(conn: Conn, project_id: str, ids: Sequence[str]) -> dict[str, MemoryRow]:
    cur = await conn.execute(Q["memory_get"], {"project_id": project_id, "ids": list(ids)})
    return {row[0]: row for row in await cur.fetchall()}  # type: ignore[misc]


async def update(conn: Conn, project_id: str, rows: UpdateColumns) -> set[str]:
    """Apply every update in one statement; returns the ids that named a memory."""
    if not rows:
        return set()
    params: dict[str, object] = {"project_id": project_id, "ids": rows.ids}
    for name in UPDATABLE:
        params[f"set_{name}"] = rows.flags[name]
        params[name] = rows.values[name]
    cur = await conn.execute(Q["memory_update"], params)
    return {row[0] for row in await cur.fetchall()}  # type: ignore[misc]


async def delete(conn: Conn, project_id: str, ids: Sequence[str]) -> set[str]:
    """Delete in one statement; returns the ids that named a memory."""
    cur = await conn.execute(Q["memory_delete"], {"project_id": project_id, "ids": list(ids)})
    return {row[0] for row in await cur.fetchall()}  # type: ignore[misc]


async def list_page(
    conn: Conn, project_id: str, filters: dict[str, object], limit: int
) -> list[MemoryRow]:
    """Up to `limit` memories matching `filters`, newest first (see memory_list)."""
    params = {**filters, "project_id": project_id, "limit": limit}
    # Unprepared, so every run is planned with its values and the unset filters fold away.
    cur = await conn.execute(Q["memory_list"], params, prepare=False)
    return await cur.fetchall()  # type: ignore[return-value]


class IdExists(Exception):
    """copy_insert met an existing id; its transaction is failed and must roll back."""


async def copy_insert(
    conn: Conn, rows: MemoryCopyRows, copying: Callable[[], object] = lambda: None
) -> None:
    """Insert a chunk of new memories by COPY, all or nothing (IdExists if one exists).

    `copying` is called once PostgreSQL has accepted the COPY, as the rows start to go out.
    """
    if not rows:
        return
    try:
        async with conn.cursor().copy(Q["memory_copy"]) as copy:
            copying()
            for part in rows.payload():
                await copy.write(part)
    except psycopg.errors.UniqueViolation as e:
        raise IdExists from e


async def copy_upsert(conn: Conn, rows: MemoryCopyRows) -> tuple[int, int]:
    """Upsert a chunk: COPY into a staging table, then one INSERT ... ON CONFLICT.

    Must run inside a transaction (the staging table empties at commit). Returns
    (inserted, updated).
    """
    if not rows:
        return 0, 0
    await conn.execute(Q["memory_stage_create"])
    async with conn.cursor().copy(Q["memory_stage_copy"]) as copy:
        for part in rows.payload():
            await copy.write(part)
    cur = await conn.execute(Q["memory_stage_upsert"])
    counted = await cur.fetchone()
    assert counted is not None  # an aggregate always returns a row
    inserted, written = int(counted[0]), int(counted[1])  # type: ignore[call-overload]
    return inserted, written - inserted
