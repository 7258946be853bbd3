"""The events table, which is also the outbox: numbered inserts, relay claims, replay and pages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import LiteralString, NamedTuple

import psycopg
from psycopg.rows import class_row

from zerodb_batch.domain.event import EventColumns, Position, StoredEvent, epoch_ms
from zerodb_batch.storage import pool
from zerodb_batch.storage.pool import Conn, translate_errors
from zerodb_batch.storage.queries import Q

LAST_SEQ = 2**63 - 1
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, tzinfo=UTC)


class Published(NamedTuple):
    seq: int
    id: str
    publish_time: datetime


class RelayBusy(Exception):
    """Another process is relaying this project's events right now."""


async def insert(conn: Conn, project_id: str, rows: EventColumns) -> list[StoredEvent]:
    """Number and write every event in one statement; returns them in input order."""
    if not rows:
        return []
    params = {
        "project_id": project_id,
        "count": len(rows),
        "topics": rows.topics,
        "payloads": rows.payloads,
    }
    async with conn.cursor(row_factory=class_row(Published)) as cur:
        await cur.execute(Q["event_insert"], params)
        written = sorted(await cur.fetchall())  # by seq: input order (RETURNING has none)
    return [
        StoredEvent(w.seq, w.id, topic, payload, w.publish_time)
        for w, topic, payload in zip(written, rows.topics, rows.payloads, strict=True)
    ]


async def lock_relay(conn: Conn, project_id: str, *, wait: bool, timeouts: Timeouts) -> int:
    """Take the project's relay lock for this transaction and return its relayed_seq, or raise
    RelayBusy.

    Publishers wait (at most the lock timeout) so that their own events go out in order behind
    those of the current relayer; the background relay skips a busy project.
    """
    params = {"project_id": project_id}
    try:
        async with conn.pipeline():  # one round trip
            await _relay_row(conn, project_id, timeouts)
            query = Q["event_relay_lock"] if wait else Q["event_relay_try_lock"]
            cur = await conn.execute(query, params)
    except psycopg.errors.LockNotAvailable as e:
        raise RelayBusy(project_id) from e
    row = await cur.fetchone()
    if row is None:
        raise RelayBusy(project_id)
    return _int(row[0])


class Timeouts(NamedTuple):
    """Of a relay transaction, in ms: waiting for the lock, and idle in between statements."""

    lock_ms: int
    idle_ms: int


async def _relay_row(conn: Conn, project_id: str, timeouts: Timeouts) -> None:
    """The transaction's relay settings, and the project's relay row if it has none yet."""
    settings = {"lock_timeout": f"{timeouts.lock_ms}ms", "idle_timeout": f"{timeouts.idle_ms}ms"}
    await conn.execute(Q["event_relay_settings"], settings)
    await conn.execute(Q["event_relay_row"], {"project_id": project_id})


async def claim(
    conn: Conn, project_id: str, after: int, up_to: int, limit: int
) -> list[StoredEvent]:
    """Under the relay lock: the project's events after `after` (its relayed_seq) up to `up_to`,
    in order."""
    params = {"project_id": project_id, "after": after, "up_to": up_to, "limit": limit}
    return await _events(conn, Q["event_claim"], params)


async def lock_and_mark_own(
    conn: Conn, project_id: str, first: int, last: int, timeouts: Timeouts
) -> int:
    """Wait for the project's relay lock, then, if no event older than `first` is pending, mark
    everything up to `last` relayed. Returns the relayed_seq found under the lock: the caller
    appends its events above it, or none when it is below first - 1 (older ones must go out
    first). One round trip (a pipeline) for the publisher's hot path; RelayBusy on lock timeout.
    """
    params = {"project_id": project_id, "first": first, "last": last}
    try:
        async with conn.pipeline():
            await _relay_row(conn, project_id, timeouts)
            cur = await conn.execute(Q["event_relay_lock"], params)
            await conn.execute(Q["event_mark_own"], params)
    except psycopg.errors.LockNotAvailable as e:
        raise RelayBusy(project_id) from e
    row = await cur.fetchone()
    assert row is not None  # the row exists: the pipeline made it
    return _int(row[0])


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


async def mark_relayed(conn: Conn, project_id: str, last: int) -> None:
    """Under the relay lock: every event up to `last` is in the stream."""
    await conn.execute(Q["event_mark_relayed"], {"project_id": project_id, "last": last})


async def pending_projects(conn: Conn, limit: int) -> list[str]:
    cur = await conn.execute(Q["event_pending_projects"], {"limit": limit})
    return [str(row[0]) for row in await cur.fetchall()]


async def relayed_projects(conn: Conn, after: str, limit: int) -> list[str]:
    """Projects whose streams hold events, in name order after `after`."""
    cur = await conn.execute(Q["event_relayed_projects"], {"after": after, "limit": limit})
    return [str(row[0]) for row in await cur.fetchall()]


class Backlog(NamedTuple):
    """Events committed and not yet in their stream, and the age of the oldest (0 if none)."""

    waiting: int
    oldest_age: float


async def backlog(conn: Conn) -> Backlog:
    """How far the relays are behind, over every project (for the metrics). In a transaction of
    its own: it waits at most a second for a lock (LockNotAvailable, as ABORTED, after that)."""
    await conn.execute(Q["event_backlog_lock_timeout"])
    cur = await conn.execute(Q["event_backlog"])
    row = await cur.fetchone()
    assert row is not None  # an aggregate has a row
    return Backlog(_int(row[0]), float(row[1]))  # type: ignore[arg-type]


async def notify(conn: Conn, project_id: str) -> None:
    """Wake the relay of every server: this project has events left to relay."""
    await conn.execute(Q["event_notify"], {"project_id": project_id})


async def head(conn: Conn, project_id: str) -> Position:
    """The position of the project's newest committed event (`0-0` before the first)."""
    cur = await conn.execute(Q["event_head"], {"project_id": project_id})
    row = await cur.fetchone()
    if row is None:
        return Position(0, 0)
    last_seq, last_time = row
    return Position(epoch_ms(last_time), int(last_seq))  # type: ignore[arg-type, call-overload]


async def first_seq_at(conn: Conn, project_id: str, time: datetime) -> int | None:
    """The seq of the first event published at or after `time`, if any."""
    cur = await conn.execute(Q["event_first_at"], {"project_id": project_id, "time": time})
    row = await cur.fetchone()
    return None if row is None else int(row[0])  # type: ignore[call-overload]


async def between(
    conn: Conn, project_id: str, after: int, before: int, limit: int
) -> list[StoredEvent]:
    """Up to `limit` events with after < seq < before, in order."""
    params = {"project_id": project_id, "after": after, "before": before, "limit": limit}
    return await _events(conn, Q["event_range"], params)


async def by_seqs(conn: Conn, project_id: str, seqs: list[int]) -> list[StoredEvent]:
    """The events with these seqs (those that exist), in order."""
    return await _events(conn, Q["event_by_seqs"], {"project_id": project_id, "seqs": seqs})


async def page(
    conn: Conn,
    project_id: str,
    *,
    topic: str | None,
    prefix: str,
    start: datetime | None,
    end: datetime | None,
    after: int,
    limit: int,
) -> list[StoredEvent]:
    """A ListEvents page: one exact `topic`, or topics starting with `prefix` ('' for all)."""
    params = {
        "project_id": project_id,
        "topic": topic,
        "prefix": prefix,
        "start_time": start or EARLIEST,
        "end_time": end or LATEST,
        "after": after,
        "limit": limit,
    }
    query = Q["event_list"] if topic is None else Q["event_list_topic"]
    return await _events(conn, query, params)


async def _events(
    conn: Conn, query: LiteralString, params: Mapping[str, object]
) -> list[StoredEvent]:
    async with conn.cursor(row_factory=class_row(StoredEvent)) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


class Notifications:
    """A connection of its own LISTENing for projects that publishers left events to relay."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def wait(self, seconds: float) -> set[str] | None:
        """Projects named by NOTIFY within `seconds`, or None when they passed silently."""
        async with translate_errors():
            named = {n.payload async for n in self._conn.notifies(timeout=seconds, stop_after=1)}
            if not named:
                return None
            # A burst of publishers deferring together: collect it and relay each project once.
            named.update([n.payload async for n in self._conn.notifies(timeout=0.01)])
        return named


@asynccontextmanager
async def listen(url: str) -> AsyncIterator[Notifications]:
    """Notifications on a new connection (not a pooled one: it stays open while it listens)."""
    async with translate_errors():
        conn = await pool.connect(url)
    async with conn:
        async with translate_errors():
            await conn.execute(Q["event_listen"])
        yield Notifications(conn)
