"""Concurrent reads on several pooled connections that all see one snapshot of the database.

One connection opens a REPEATABLE READ, READ ONLY transaction and exports its snapshot
(`pg_export_snapshot()`); each reader connection starts the same kind of transaction and imports
it (`SET TRANSACTION SNAPSHOT`), so every read of a parallel batch sees exactly the state a
sequential one would, whatever commits meanwhile. The exporter only holds the snapshot: an
error in its transaction would end the snapshot for readers still to come. So a snapshot with
concurrency N takes up to N + 1 connections of the pool.

Readers are opened as reads need them, up to N, and each is reused by later reads. A read waits
for whichever comes first, a reader freed by another read or a new one from the pool, so two
batches that share a small pool cannot each hold readers while waiting for more.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, LiteralString, TypeVar

import psycopg
from psycopg import sql

from zerodb_batch.storage.pool import Conn, Database, translate_errors

T = TypeVar("T")

_BEGIN: Final = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"


@contextlib.asynccontextmanager
async def shared_snapshot(db: Database, concurrency: int) -> AsyncIterator[SharedSnapshot]:
    """A snapshot of the database for reads run by `SharedSnapshot.run`, at most `concurrency`
    at a time; driver errors are translated (Unavailable)."""
    async with db.connection() as exporter:
        await exporter.execute(_BEGIN)
        cur = await exporter.execute("SELECT pg_export_snapshot()")
        (snapshot_id,) = await cur.fetchone()  # type: ignore[misc]
        readers = SharedSnapshot(db, str(snapshot_id), concurrency)
        try:
            yield readers
        finally:
            await readers.close()
            await exporter.execute("COMMIT")


@contextlib.asynccontextmanager
async def snapshot_reads(db: Database) -> AsyncIterator[Conn]:
    """One connection in a REPEATABLE READ, READ ONLY transaction: reads made one after another
    see one state of the database, as those of a shared snapshot do. In pipeline mode: a read
    goes out without waiting for the answer to the one before (BEGIN travels with the first),
    and an answer is awaited only when it is fetched."""
    async with db.connection() as conn:
        try:
            async with conn.pipeline():
                await conn.execute(_BEGIN)
                yield conn
        finally:
            # It only read: nothing to keep. A connection that cannot even roll back is the
            # pool's to check or replace.
            with contextlib.suppress(psycopg.Error):
                await conn.execute("ROLLBACK")


class SharedSnapshot:
    """Runs reads on reader connections that import one exported snapshot."""

    def __init__(self, db: Database, snapshot_id: str, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be 1 or more")
        self._db = db  # getconn / putconn, failing fast while PostgreSQL is down
        self._import = sql.SQL("{}; SET TRANSACTION SNAPSHOT {}").format(
            sql.SQL(_BEGIN), sql.Literal(snapshot_id)
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._limit = concurrency
        self._readers = 0  # open or being opened
        self._waiting = 0
        self._free: asyncio.Queue[Conn | Exception] = asyncio.Queue()
        self._openers: set[asyncio.Task[None]] = set()

    async def run(self, read: Callable[[Conn], Awaitable[T]]) -> T:
        """`read(conn)` on a reader connection, inside its snapshot transaction.

        If `read` raises (or is cancelled), its connection is rolled back and given back to the
        pool, and a later read gets another one.
        """
        async with self._slots, translate_errors():
            conn = await self._take()
            try:
                result = await read(conn)
            except BaseException:
                await self._discard(conn)
                raise
            self._free.put_nowait(conn)
            return result

    async def _take(self) -> Conn:
        if self._free.empty() and self._readers < self._limit:
            self._spawn_opener()
        self._waiting += 1
        try:
            got = await self._free.get()
        finally:
            self._waiting -= 1
        if isinstance(got, Exception):
            raise got
        return got

    def _spawn_opener(self) -> None:
        self._readers += 1
        task = asyncio.create_task(self._open())
        self._openers.add(task)
        task.add_done_callback(self._openers.discard)

    async def _open(self) -> None:
        """Adds a new reader, or the error that prevented it, to the free queue."""
        try:
            conn = await self._db.getconn()
        except Exception as e:
            self._readers -= 1
            self._free.put_nowait(e)
            return
        try:
            await conn.execute(self._import)
        except BaseException as e:
            self._readers -= 1
            await self._db.putconn(conn)
            if not isinstance(e, Exception):
                raise
            self._free.put_nowait(e)
            return
        self._free.put_nowait(conn)

    async def _discard(self, conn: Conn) -> None:
        self._readers -= 1
        if self._waiting > self._free.qsize():
            self._spawn_opener()  # a waiting read may have counted on this reader
        await self._end(conn, "ROLLBACK")

    async def _end(self, conn: Conn, command: LiteralString) -> None:
        # A connection that cannot end its transaction is the pool's to check or replace.
        with contextlib.suppress(psycopg.Error):
            await conn.execute(command)
        await self._db.putconn(conn)

    async def close(self) -> None:
        """End every reader's transaction and give the connections back."""
        for task in list(self._openers):
            task.cancel()
        await asyncio.gather(*self._openers, return_exceptions=True)
        while not self._free.empty():
            got = self._free.get_nowait()
            if not isinstance(got, Exception):
                await self._end(got, "COMMIT")
