"""Parallel reads on one exported snapshot: while another connection keeps committing inserts,
updates and deletes, reads run concurrently on several pooled connections return exactly what a
sequential read returned before the writes began; concurrency stays within its bound; a failed
read gives its connection back without disturbing the others; nothing is left in a transaction."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest

from tests.plugins.tables import Loop
from zerodb_batch.domain.table_filter import MATCH_ALL, parse_filter
from zerodb_batch.domain.table_ops import RowQuery, SortKey
from zerodb_batch.storage import table_rows
from zerodb_batch.storage.pool import Conn, open_database
from zerodb_batch.storage.snapshot import SharedSnapshot, shared_snapshot
from zerodb_batch.storage.tables import TableInfo

Read = Callable[[Conn], Awaitable[Any]]


def reads(table: TableInfo) -> list[Read]:
    """Twelve reads of the table: counts, filtered and sorted pages."""
    out: list[Read] = []
    for k in range(4):
        flt = parse_filter({"n": {"$gte": k * 20}}, "filters")
        query = RowQuery(filter=flt, sort=(SortKey(("n",), k % 2 == 1),), limit=7, skip=k)
        out.append(lambda conn, q=query: _page(conn, table, q))
        out.append(lambda conn, f=flt: table_rows.count(conn, table, f))
        out.append(lambda conn: table_rows.count(conn, table, MATCH_ALL))
    return out


async def _page(conn: Conn, table: TableInfo, q: RowQuery) -> list[tuple[str, Any]]:
    page = await table_rows.query(conn, table, q)
    return [(r.row_id, r.row_data) for r in page.rows]


async def write(conn: Conn, table: TableInfo, k: int) -> None:
    """Commit an insert, an update and a delete, each changing what the reads see."""
    async with conn.transaction():
        await table_rows.insert(conn, table, [json.dumps({"n": 1000 + k})])
        await conn.execute("UPDATE table_rows SET row_data = row_data || '{\"n\": -1}'"
                           " WHERE table_id = %s AND row_data->'n' = %s",
                           (table.table_id, json.dumps(k)))  # fmt: skip
        await table_rows.delete(conn, table, parse_filter({"n": 99 - k}, "filters"))


async def write_until(stop: asyncio.Event, conn: Conn, table: TableInfo) -> int:
    """Keep committing writes until told to stop; returns how many."""
    commits = 1
    while not stop.is_set():
        await write(conn, table, commits)
        commits += 1
    return commits


@pytest.fixture
def filled(aloop: Loop) -> TableInfo:
    table = aloop.table("snap", "n")
    aloop.run(table_rows.insert(aloop.conn, table, [json.dumps({"n": i}) for i in range(100)]))
    return table


def test_parallel_reads_see_the_snapshot_while_another_connection_writes(
    aloop: Loop, filled: TableInfo
) -> None:
    before = [aloop.run(read(aloop.conn)) for read in reads(filled)]  # sequential, no writer
    writer = aloop.connect()

    async def scenario() -> tuple[list[Any], int, set[int], int]:
        db = await open_database(aloop.url, 1, 6, 10)
        async with db.pool:
            busy, most, pids = 0, 0, set()

            async def tracked(read: Read, conn: Conn) -> Any:
                nonlocal busy, most
                busy += 1
                most = max(most, busy)
                pids.add(conn.info.backend_pid)
                try:
                    await asyncio.sleep(0.01)  # overlap the reads with each other and the writer
                    return await read(conn)
                finally:
                    busy -= 1

            async with shared_snapshot(db, concurrency=3) as snapshot:
                await write(writer, filled, 0)  # committed after the snapshot, before any read
                stop = asyncio.Event()
                writing = asyncio.create_task(write_until(stop, writer, filled))
                results = await asyncio.gather(
                    *(snapshot.run(lambda c, r=read: tracked(r, c)) for read in reads(filled))
                )
                stop.set()
                commits = await writing
            return results, most, pids, commits

    results, most, pids, commits = aloop.run(scenario())
    assert commits >= 2
    assert results == before
    assert most <= 3 and len(pids) <= 3
    after = [aloop.run(read(aloop.conn)) for read in reads(filled)]
    assert after != before  # the writes did happen: the snapshot is what hid them
    assert in_transaction(aloop) == 0


def in_transaction(aloop: Loop) -> int:
    query = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
             " AND state LIKE 'idle in transaction%%' AND pid <> pg_backend_pid()")  # fmt: skip
    return int(aloop.run(aloop.run(aloop.conn.execute(query)).fetchone())[0])  # type: ignore[index]


def test_a_failed_read_gives_its_connection_back(aloop: Loop, filled: TableInfo) -> None:
    async def scenario() -> tuple[int, int, list[int]]:
        db = await open_database(aloop.url, 1, 3, 10)
        async with db.pool, shared_snapshot(db, concurrency=2) as snapshot:
            before = await snapshot.run(lambda c: table_rows.count(c, filled, MATCH_ALL))
            await aloop.conn.execute(
                "DELETE FROM table_rows WHERE table_id = %s", (filled.table_id,)
            )
            with pytest.raises(psycopg.errors.DivisionByZero):
                await snapshot.run(lambda c: c.execute("SELECT 1 / 0"))
            counts = await asyncio.gather(
                *(snapshot.run(lambda c: table_rows.count(c, filled, MATCH_ALL)) for _ in range(5))
            )
            return before, len(counts), counts

    before, runs, counts = aloop.run(scenario())
    assert before == 100 and runs == 5 and counts == [100] * 5
    assert in_transaction(aloop) == 0


def test_concurrency_must_be_positive() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        SharedSnapshot(None, "snap", 0)  # type: ignore[arg-type]
