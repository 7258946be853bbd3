"""storage/pool.Database while PostgreSQL is known down: no connection is handed out, waits in
progress end at once (UNAVAILABLE, not the pool timeout), and it serves again when told it is
back. The API tests (tests/api/test_fail_fast.py) show the same through a server."""

from __future__ import annotations

import asyncio

import pytest

from zerodb_batch.errors import Unavailable
from zerodb_batch.storage.pool import Database, open_database


def test_a_known_outage_refuses_and_ends_waits_then_serves_again(database_url: str) -> None:
    async def scenario() -> None:
        db = await open_database(database_url, 1, 1, 60)  # one connection, a 60 s wait
        try:
            async with db.connection() as held:  # the only connection: the next call waits
                waiting = asyncio.create_task(_select(db))
                for _ in range(2000):  # at most 20 s for the task to queue
                    if db.stats().get("requests_waiting"):
                        break
                    await asyncio.sleep(0.01)
                await db.reachable(False)
                with pytest.raises(Unavailable, match="unreachable"):
                    await asyncio.wait_for(waiting, 5)  # far below the pool's 60 s
                await held.execute("SELECT 1")  # a call already running is left alone
            with pytest.raises(Unavailable, match="unreachable"):
                await _select(db)
            await db.reachable(True)
            assert await _select(db) == 1
            stats = db.stats()
            assert (stats["pool_available"], stats.get("requests_waiting", 0)) == (1, 0)
        finally:
            await db.close()

    asyncio.run(scenario())


async def _select(db: Database) -> int:
    async with db.connection() as conn:
        cur = await conn.execute("SELECT 1")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])  # type: ignore[call-overload]
