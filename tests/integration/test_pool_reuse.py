"""What storage/pool.Database hands out again: a connection given back moments ago goes out
without a check round trip, unless its backend has gone (its socket is readable then); and never
one left in pipeline mode (a call cancelled inside a pipeline leaves it so: the next user's COPY
would fail, its queries never flushed)."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from psycopg import pq
from psycopg_pool import AsyncConnectionPool

from zerodb_batch.storage.pool import TCP_KEEPALIVES, open_database


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The backend pid of every connection psycopg_pool's check ran on (the real check runs)."""
    seen: list[int] = []
    real = AsyncConnectionPool.check_connection

    async def counted(conn: psycopg.AsyncConnection[object]) -> None:
        seen.append(conn.info.backend_pid)
        await real(conn)

    monkeypatch.setattr(AsyncConnectionPool, "check_connection", staticmethod(counted))
    return seen


def test_a_connection_given_back_clean_goes_out_again_unchecked(
    database_url: str, checks: list[int]
) -> None:
    async def scenario() -> list[int]:
        db = await open_database(database_url, 1, 1, 10)
        pids = []
        try:
            for _ in range(3):
                async with db.connection() as conn:
                    pids.append(conn.info.backend_pid)
        finally:
            await db.close()
        return pids

    pids = asyncio.run(scenario())
    assert len(set(pids)) == 1
    assert checks == pids[:1]  # the first hand-out only: it was never given back before


def test_a_connection_whose_backend_was_terminated_is_checked_and_replaced(
    database_url: str, checks: list[int]
) -> None:
    async def scenario() -> None:
        db = await open_database(database_url, 1, 1, 10)
        try:
            async with db.connection() as conn:
                gone = conn.info.backend_pid
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (gone,))
                deadline = time.monotonic() + 10
                while admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (gone,)
                ).fetchone():
                    assert time.monotonic() < deadline, "the backend was not terminated"
                    await asyncio.sleep(0.05)
            async with db.connection() as conn:  # the call does not see the dead connection
                cur = await conn.execute("SELECT pg_backend_pid()")
                assert await cur.fetchone() != (gone,)
            assert gone in checks
        finally:
            await db.close()

    asyncio.run(scenario())


def test_a_connection_left_in_pipeline_mode_is_not_handed_out_again(database_url: str) -> None:
    async def scenario() -> None:
        db = await open_database(database_url, 1, 1, 10)  # one connection: reuse is certain
        try:
            conn = await db.getconn()
            pipeline = conn.pipeline()
            await pipeline.__aenter__()  # entered and never left, as by a cancelled call
            assert conn.pgconn.pipeline_status != pq.PipelineStatus.OFF
            await db.putconn(conn)
            async with db.connection() as again:
                assert again.pgconn.pipeline_status == pq.PipelineStatus.OFF
                cur = await again.execute("SELECT 1")
                assert await cur.fetchone() == (1,)
                async with again.cursor().copy("COPY (SELECT 2) TO STDOUT") as copy:
                    assert [bytes(row) async for row in copy] == [b"2\n"]
        finally:
            await db.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("url_sets", [False, True])
def test_connections_use_tcp_keepalives_unless_the_url_says(
    database_url: str, url_sets: bool
) -> None:
    """A server that vanishes without closing its connections is found by keepalives, so a
    waiting call fails instead of hanging; a URL's own keepalive settings win."""
    url = psycopg.conninfo.make_conninfo(
        database_url, **({"keepalives_idle": "7"} if url_sets else {})
    )

    async def parameters() -> dict[str, str]:
        db = await open_database(url, 1, 1, 10)
        try:
            async with db.connection() as conn:
                return conn.info.get_parameters()
        finally:
            await db.close()

    found = asyncio.run(parameters())
    expected = {**TCP_KEEPALIVES, **({"keepalives_idle": "7"} if url_sets else {})}
    assert {name: found.get(name) for name in expected} == expected
