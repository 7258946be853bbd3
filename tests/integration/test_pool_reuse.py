"""What storage/pool.Database hands out again: a connection given back moments ago goes out
without a check round trip, but never one left in pipeline mode (a call cancelled inside a
pipeline leaves it so: the next user's COPY would fail, its queries never flushed)."""

from __future__ import annotations

import asyncio

from psycopg import pq

from zerodb_batch.storage.pool import open_database


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
