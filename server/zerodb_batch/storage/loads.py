"""The loads table: the committed progress of each streamed load, advanced with every chunk."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import LiteralString

from psycopg.rows import class_row

from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.queries import Q


@dataclass(frozen=True)
class LoadProgress:
    """One row of `loads`, as the load_* queries return it."""

    load_id: str
    kind: str
    done: bool
    last_offset: int
    chunks_committed: int
    chunks_skipped: int
    inserted: int
    updated: int
    failed: int
    create_time: datetime
    update_time: datetime

    @property
    def next_offset(self) -> int:
        return self.last_offset + 1


class IdExists(Exception):
    """A chunk's COPY of rows taken for new met an existing id; its transaction is failed and
    must roll back (the writer then upserts: see RetryChunk)."""


class RetryChunk(Exception):
    """Raised by a load writer inside a chunk's transaction: roll it back and write the chunk
    again (say, a COPY of rows taken for new met an existing id: the next try upserts)."""


@dataclass(frozen=True)
class ChunkCounts:
    """What one committed chunk adds to its load."""

    inserted: int = 0
    updated: int = 0
    failed: int = 0
    skipped: int = 0  # duplicate chunks seen since the last write of the progress row


async def get(conn: Conn, project_id: str, load_id: str) -> LoadProgress | None:
    return await _progress(conn, Q["load_get"], {"project_id": project_id, "load_id": load_id})


async def advance(
    conn: Conn,
    project_id: str,
    load_id: str,
    kind: str,
    offset: int,
    counts: ChunkCounts,
    final: bool = False,
) -> LoadProgress | None:
    """Count chunk `offset` as committed with this transaction (the load's last if `final`: it is
    then done); None if the load moved on.

    Also lets the transaction commit without waiting for its WAL flush (see the SQL).
    """
    params = {
        "project_id": project_id,
        "load_id": load_id,
        "kind": kind,
        "final": final,
        "offset": offset,
        "inserted": counts.inserted,
        "updated": counts.updated,
        "failed": counts.failed,
        "skipped": counts.skipped,
    }
    return await _progress(conn, Q["load_advance"], params)


async def finish(
    conn: Conn, project_id: str, load_id: str, through: int, skipped: int
) -> LoadProgress | None:
    """After a clean close that reached offset `through`: the load is done if that is its last
    chunk. Adds the duplicates not yet counted either way."""
    params = {"project_id": project_id, "load_id": load_id, "through": through, "skipped": skipped}
    return await _progress(conn, Q["load_finish"], params)


async def add_skipped(conn: Conn, project_id: str, load_id: str, skipped: int) -> None:
    """Count duplicate chunks a stream skipped and could not record with a later chunk."""
    params = {"project_id": project_id, "load_id": load_id, "skipped": skipped}
    await conn.execute(Q["load_add_skipped"], params)


async def _progress(
    conn: Conn, query: LiteralString, params: dict[str, object]
) -> LoadProgress | None:
    async with conn.cursor(row_factory=class_row(LoadProgress)) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()
