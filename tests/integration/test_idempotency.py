"""request_id claims against a real PostgreSQL: the expiry sweep racing a replay, and a concurrent
duplicate that must wait for the first transaction."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg

from zerodb.v1 import memory_pb2
from zerodb_batch.storage import idempotency
from zerodb_batch.storage.migrate import migrate
from zerodb_batch.storage.pool import Conn

REQUEST = memory_pb2.BatchDeleteMemoriesRequest(project_id="p1", ids=["a"], request_id="r-1")
RESPONSE = memory_pb2.BatchDeleteMemoriesResponse(deleted=1)


async def connect(url: str) -> Conn:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def claim(conn: Conn) -> memory_pb2.BatchDeleteMemoriesResponse | None:
    """One request's claim in its own transaction; records RESPONSE when it ran first."""
    async with conn.transaction():
        replay = await idempotency.claim(conn, REQUEST, memory_pb2.BatchDeleteMemoriesResponse)
        if replay is None:
            await idempotency.record(conn, REQUEST, RESPONSE)
        return replay


def test_a_replay_survives_the_sweep_deleting_its_row(own_database: str) -> None:
    """The sweep may delete the stored row at any moment of a replay: never INTERNAL."""

    async def scenario() -> None:
        async with await connect(own_database) as conn, await connect(own_database) as sweeper:
            await migrate(conn)
            assert await claim(conn) is None  # the first request, committed
            await sweeper.execute("SET lock_timeout = '200ms'")
            execute = conn.execute

            async def execute_then_sweep(*args: Any, **kwargs: Any) -> Any:
                cursor = await execute(*args, **kwargs)
                # A row the replay holds locked is the sweep's to wait for, not to delete.
                with contextlib.suppress(psycopg.errors.LockNotAvailable):
                    await idempotency.expire(sweeper, hours=0)
                return cursor

            conn.execute = execute_then_sweep  # type: ignore[method-assign]
            assert await claim(conn) == RESPONSE

    asyncio.run(scenario())


def test_a_concurrent_duplicate_waits_for_the_first_transaction(own_database: str) -> None:
    async def lock_waiter(observer: Conn, pid: int) -> None:
        query = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s"
        for _ in range(500):
            row = await (await observer.execute(query, (pid,))).fetchone()
            if row is not None and row[0] == "Lock":
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the duplicate never waited on the first request's row")

    async def scenario(commit: bool) -> memory_pb2.BatchDeleteMemoriesResponse | None:
        async with (
            await connect(own_database) as first,
            await connect(own_database) as second,
            await connect(own_database) as observer,
        ):
            await migrate(first)
            await first.execute("DELETE FROM idempotent_requests")
            async with first.transaction():
                response_type = memory_pb2.BatchDeleteMemoriesResponse
                assert await idempotency.claim(first, REQUEST, response_type) is None
                duplicate = asyncio.create_task(claim(second))
                await lock_waiter(observer, second.info.backend_pid)
                assert not duplicate.done()
                if not commit:  # the first request failed: the duplicate runs as the first
                    raise psycopg.Rollback
                await idempotency.record(first, REQUEST, RESPONSE)
            return await duplicate

    assert asyncio.run(scenario(commit=True)) == RESPONSE
    assert asyncio.run(scenario(commit=False)) is None
