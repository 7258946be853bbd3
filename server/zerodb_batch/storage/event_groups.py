"""Consumer groups in PostgreSQL: each group's fixed topic filter and start, and the pending list
of the events delivered to a group from PostgreSQL rather than from its Redis stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from psycopg.rows import class_row

from zerodb_batch.domain.event import Position, StoredEvent
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.queries import Q


class Group(NamedTuple):
    """A group as its first subscriber made it."""

    topics: list[str]  # sorted; empty for every topic
    start_ms: int
    start_seq: int

    @property
    def start(self) -> Position:
        return Position(self.start_ms, self.start_seq)


async def register(
    conn: Conn, project_id: str, group: str, topics: Sequence[str], start: Position
) -> Group:
    """The group, made with `topics` and `start` unless it exists already."""
    params = {
        "project_id": project_id,
        "group": group,
        "topics": list(topics),
        "start_ms": start.ms,
        "start_seq": start.seq,
    }
    async with conn.cursor(row_factory=class_row(Group)) as cur:
        await cur.execute(Q["event_group_register"], params)
        row = await cur.fetchone()
    assert row is not None  # made, or found
    return row


async def advance(conn: Conn, project_id: str, group: str, acknowledged: Position) -> None:
    """The group has acknowledged every event up to `acknowledged`: where to make it again."""
    params = {
        "project_id": project_id,
        "group": group,
        "start_ms": acknowledged.ms,
        "start_seq": acknowledged.seq,
    }
    await conn.execute(Q["event_group_advance"], params)


async def track(conn: Conn, project_id: str, group: str, consumer: str, seqs: list[int]) -> None:
    """The events `seqs` are pending to `consumer` from now (before they are sent)."""
    if seqs:
        params = {"project_id": project_id, "group": group, "consumer": consumer, "seqs": seqs}
        await conn.execute(Q["event_group_track"], params)


async def claim(
    conn: Conn,
    project_id: str,
    group: str,
    consumer: str,
    *,
    own: bool,
    idle_ms: int = 0,
    after: int = 0,
    limit: int,
) -> list[StoredEvent]:
    """Pending events taken for `consumer`: its own (`own`), or others' idle past `idle_ms`."""
    params = {
        "project_id": project_id,
        "group": group,
        "consumer": consumer,
        "own": own,
        "idle_ms": idle_ms,
        "after": after,
        "limit": limit,
    }
    async with conn.cursor(row_factory=class_row(StoredEvent)) as cur:
        await cur.execute(Q["event_group_claim"], params)
        return await cur.fetchall()


async def count(conn: Conn, project_id: str, group: str, consumer: str) -> int:
    params = {"project_id": project_id, "group": group, "consumer": consumer}
    cur = await conn.execute(Q["event_group_count"], params)
    row = await cur.fetchone()
    assert row is not None and isinstance(row[0], int)  # an aggregate has a row
    return row[0]


async def ack(conn: Conn, project_id: str, group: str, seqs: list[int]) -> int:
    """Acknowledge; returns how many were pending here."""
    if not seqs:
        return 0
    params = {"project_id": project_id, "group": group, "seqs": seqs}
    cur = await conn.execute(Q["event_group_ack"], params)
    return cur.rowcount
