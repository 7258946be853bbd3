"""The health monitor's probe of PostgreSQL: `SELECT 1` on a connection of its own, outside the
pool, so that calls holding every pooled connection never make the server look down."""

from __future__ import annotations

import psycopg

from zerodb_batch.storage import pool

CONNECT_TIMEOUT = 2  # seconds (libpq's smallest useful value)


class PostgresProbe:
    """Call it to probe: returns when PostgreSQL answers, raises psycopg.Error otherwise."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None

    async def __call__(self) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = await pool.connect(
                self._url,
                connect_timeout=CONNECT_TIMEOUT,
                application_name="zerodb-batch health probe",
            )
        try:
            await self._conn.execute("SELECT 1")
        except psycopg.Error:
            await self.close()  # the next probe connects afresh
            raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
