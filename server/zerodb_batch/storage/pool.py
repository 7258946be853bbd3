"""The async connection pool, and the border where driver errors become our errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from zerodb_batch.errors import Unavailable

log = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[tuple[object, ...]]


async def open_pool(
    url: str, min_size: int, max_size: int, wait_seconds: float
) -> AsyncConnectionPool[Conn]:
    """Open a pool and wait for its first connections, so a wrong URL fails at start-up."""
    pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=wait_seconds,
        kwargs={"autocommit": True},
        check=AsyncConnectionPool.check_connection,
        name="zerodb",
    )
    await pool.open(wait=True, timeout=15.0)
    return pool


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Lost connections and an exhausted pool become UNAVAILABLE (retryable)."""
    try:
        yield
    except PoolTimeout as e:
        raise Unavailable(
            "PostgreSQL is not answering (no connection within the pool timeout)"
        ) from e
    except psycopg.OperationalError as e:
        log.warning("postgres operational error: %s", e)
        raise Unavailable("PostgreSQL is unavailable; retry the call") from e


@asynccontextmanager
async def transaction(pool: AsyncConnectionPool[Conn]) -> AsyncIterator[Conn]:
    """A pooled connection inside one transaction, with driver errors translated."""
    async with translate_errors(), pool.connection() as conn, conn.transaction():
        yield conn


class HeldConnection:
    """One pooled connection kept across a caller's consecutive transactions.

    A streamed load commits a transaction per chunk; while chunks keep arriving, taking the
    connection from the pool for each one would cost its check (a round trip) every time. The
    caller gives it back with release() whenever it has to wait, and after any failure the
    connection goes back at once (the pool checks or replaces it).
    """

    def __init__(self, pool: AsyncConnectionPool[Conn]) -> None:
        self._pool = pool
        self._conn: Conn | None = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with translate_errors():
            if self._conn is None:
                self._conn = await self._pool.getconn()
            try:
                async with self._conn.transaction():
                    yield self._conn
            except BaseException:
                await self.release()
                raise

    async def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._pool.putconn(conn)


@asynccontextmanager
async def pipelined_transaction(pool: AsyncConnectionPool[Conn]) -> AsyncIterator[Conn]:
    """Like transaction(), in pipeline mode: statements go out without waiting for the previous
    one's result (BEGIN travels with the first), and a result is awaited only when fetched."""
    async with translate_errors(), pool.connection() as conn, conn.pipeline(), conn.transaction():
        yield conn


@asynccontextmanager
async def connection(pool: AsyncConnectionPool[Conn]) -> AsyncIterator[Conn]:
    """A pooled connection (autocommit) for reads, with driver errors translated."""
    async with translate_errors(), pool.connection() as conn:
        yield conn
