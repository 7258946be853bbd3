"""The database as the layers above storage see it: pooled connections and transactions, with
driver errors turned into our errors at this border."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import psycopg
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.trace import TracerProvider
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from zerodb_batch.errors import Aborted, Unavailable

log = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[tuple[object, ...]]

# SQLSTATEs of concurrency conflicts: the transaction was rolled back and the same call may
# succeed when retried (ABORTED), as opposed to a server that cannot be reached (UNAVAILABLE).
_CONFLICTS = {
    "40P01": ("DEADLOCK", "a deadlock with a concurrent transaction"),
    "40001": ("SERIALIZATION_FAILURE", "a serialization failure against a concurrent transaction"),
    "55P03": ("LOCK_TIMEOUT", "a row lock held too long by a concurrent transaction"),
}


# Checking a connection as it is handed out costs a round trip on every call (a quarter of a
# small call's time in the server). A connection given back clean, idle since for less than
# this, and with nothing to read on its socket is handed out unchecked: a backend that was
# terminated, or a server that went away, has sent an error or closed the socket by then (the
# socket is readable), and an outage is caught by the dependency monitor, which has the pool
# check every connection when PostgreSQL is back. A peer that vanished silently (a partition, a
# host gone) is found by TCP keepalives (below) or the call's deadline, and the connection is
# replaced.
UNCHECKED_IDLE_SECONDS: Final = 10.0
# libpq's TCP keepalives, unless the URL sets its own: a probe after 30 s of silence, then every
# 10 s, the connection dead after 3 unanswered, so a call waiting on a server that is gone fails
# in about a minute instead of the kernel's default of over two hours. A busy server answers
# probes (its kernel does), so a long statement is never cut short. Probes go only while nothing
# sent is unacknowledged: a statement sent to a vanished peer waits on retransmission (minutes)
# or its call's deadline. tcp_user_timeout would bound that too, but recent Linux kernels apply
# it to zero-window probes as well, aborting a COPY whose server stops reading for that long
# (waiting on a lock). Unix sockets ignore keepalives.
TCP_KEEPALIVES: Final = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}
_RETURNED: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()


async def _check_unless_fresh(conn: Conn) -> None:
    """psycopg_pool's check (a round trip), unless the connection is known good (see above)."""
    returned = _RETURNED.pop(conn, None)
    if returned is None or time.monotonic() - returned > UNCHECKED_IDLE_SECONDS or _stale(conn):
        await AsyncConnectionPool.check_connection(conn)


def _stale(conn: Conn) -> bool:
    """Broken, or with something unasked-for on its socket (it was given back clean: see
    Database.putconn, the only place that notes a connection as returned)."""
    pgconn = conn.pgconn
    if pgconn.status != pq.ConnStatus.OK:
        return True
    poll = select.poll()
    poll.register(pgconn.socket, select.POLLIN)
    return bool(poll.poll(0))


async def _configure(conn: Conn) -> None:
    # A backend whose client has gone keeps running its statement (waiting on a lock, say) until
    # it next reads or writes: psycopg closes a connection whose statement a cancel did not stop,
    # and a killed server leaves its statements behind. Checked every second, they end in one.
    await conn.execute("SET client_connection_check_interval = 1000")


async def open_database(url: str, min_size: int, max_size: int, wait_seconds: float) -> Database:
    """Open a pool and wait for its first connections, so a wrong URL fails at start-up."""
    pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=wait_seconds,
        kwargs={"autocommit": True, **_unset(TCP_KEEPALIVES, url)},
        check=_check_unless_fresh,
        configure=_configure,
        # How long one attempt to replace a lost connection keeps retrying (with a growing
        # backoff) before it gives up and the next demand starts afresh. psycopg_pool's default
        # of 300 s made calls wait 17-31 s after a 45-90 s outage; a few seconds recover in ~1 s.
        reconnect_timeout=5.0,
        name="zerodb",
    )
    await pool.open(wait=True, timeout=15.0)
    return Database(pool)


def _unset(defaults: dict[str, str], url: str) -> dict[str, str]:
    """The connection parameters of `defaults` that `url` does not set itself."""
    given = conninfo_to_dict(url)
    return {name: value for name, value in defaults.items() if name not in given}


def trace_statements(provider: TracerProvider) -> None:
    """Every SQL statement a span of `provider` (OpenTelemetry's psycopg instrumentation, on
    connections made from now on)."""
    instrumentor = PsycopgInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Lost connections and an exhausted pool become UNAVAILABLE; conflicts become ABORTED."""
    try:
        yield
    except PoolTimeout as e:
        raise Unavailable(
            "PostgreSQL is not answering (no connection within the pool timeout)"
        ) from e
    except psycopg.OperationalError as e:
        conflict = _CONFLICTS.get(e.sqlstate or "") or (
            ("TRANSACTION_ROLLBACK", "a conflict with a concurrent transaction")
            if (e.sqlstate or "").startswith("40")
            else None
        )
        if conflict is not None:
            reason, what = conflict
            raise Aborted(
                f"the call was rolled back after {what}; nothing was written, retry it",
                reason=reason,
            ) from e
        log.warning("postgres operational error: %s", e)
        raise Unavailable("PostgreSQL is unavailable; retry the call") from e
    except psycopg.InterfaceError as e:  # the connection was closed under us
        log.warning("postgres connection lost: %s", e)
        raise Unavailable("PostgreSQL is unavailable; retry the call") from e


def _unreachable() -> Unavailable:
    return Unavailable("PostgreSQL is unreachable; retry the call")


async def connect(url: str, **params: Any) -> Conn:
    """A connection outside the pool (autocommit), with its TCP keepalives as the pool's."""
    return await psycopg.AsyncConnection.connect(
        url, autocommit=True, **{**_unset(TCP_KEEPALIVES, url), **params}
    )


@asynccontextmanager
async def single_connection(url: str) -> AsyncIterator[Conn]:
    """One connection of its own (autocommit), for a command that runs a few statements."""
    async with translate_errors():
        conn = await connect(url)
    async with conn:
        yield conn


class Database:
    """Pooled connections for the API layer, which never sees the driver or the pool itself.

    While PostgreSQL is known to be unreachable (`reachable(False)`, from the dependency
    monitor), asking for a connection fails at once with UNAVAILABLE, and calls already waiting
    for one stop waiting: otherwise each would wait out the pool timeout (10 s by default) for
    a connection that cannot come. A call's deadline needs nothing here: grpc cancels the
    handler's task when it passes, and psycopg answers a cancelled task by cancelling its query
    in the server (the transaction then rolls back and the connection returns to the pool).
    """

    def __init__(self, pool: AsyncConnectionPool[Conn]) -> None:
        self.pool = pool
        self._down = False
        self._waits: set[asyncio.Timeout] = set()  # of the calls waiting for a connection
        self._checking: asyncio.Task[None] | None = None

    async def reachable(self, up: bool) -> None:
        """Told whether PostgreSQL answers. When it answers again, the pool's idle connections
        (broken by the outage) are checked and replaced at once rather than by the next calls,
        in the background: a check may take as long as a slow server makes it."""
        was_down, self._down = self._down, not up
        if not up:
            for wait in self._waits:
                wait.reschedule(-1)  # already past: the wait ends with TimeoutError at once
        elif was_down and (self._checking is None or self._checking.done()):
            self._checking = asyncio.create_task(self.pool.check())

    async def getconn(self) -> Conn:
        """A connection from the pool (give it back with `putconn`), or Unavailable at once
        while PostgreSQL is known to be down."""
        if self._down:
            raise _unreachable()
        wait = asyncio.timeout(None)  # set off by reachable(False) only
        self._waits.add(wait)
        try:
            async with wait:
                return await self.pool.getconn()
        except TimeoutError:
            if not wait.expired():
                raise
            raise _unreachable() from None
        finally:
            self._waits.discard(wait)

    async def putconn(self, conn: Conn) -> None:
        try:
            if not conn.closed and conn.pgconn.pipeline_status != pq.PipelineStatus.OFF:
                # A call cancelled inside a pipeline can leave its connection in pipeline mode,
                # where the next user's COPY fails and its queries are never flushed: not
                # reused. Its statement is cancelled first: closing alone leaves one blocked on
                # a lock.
                try:
                    with contextlib.suppress(psycopg.Error):
                        await conn.cancel_safe(timeout=2.0)
                finally:
                    await conn.close()
            elif not conn.closed and conn.pgconn.transaction_status == pq.TransactionStatus.IDLE:
                _RETURNED[conn] = time.monotonic()
        finally:  # even when cancelled again meanwhile (at shutdown): the pool keeps its slot
            await self.pool.putconn(conn)

    @asynccontextmanager
    async def _borrowed(self) -> AsyncIterator[Conn]:
        conn = await self.getconn()
        try:
            yield conn
        finally:
            await self.putconn(conn)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A connection in autocommit mode, for reads and statements that commit alone."""
        async with translate_errors(), self._borrowed() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """A connection inside one transaction."""
        async with translate_errors(), self._borrowed() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def pipelined_transaction(self) -> AsyncIterator[Conn]:
        """Like transaction(), in pipeline mode: statements go out without waiting for the
        previous one's result (BEGIN travels with the first), and a result is awaited only when
        fetched."""
        async with (
            translate_errors(),
            self._borrowed() as conn,
            conn.pipeline(),
            conn.transaction(),
        ):
            yield conn

    def stats(self) -> dict[str, int]:
        """The pool's sizes and cumulative counters (psycopg_pool's get_stats)."""
        return self.pool.get_stats()

    def held(self) -> HeldConnection:
        """One connection for a run of consecutive transactions (see HeldConnection)."""
        return HeldConnection(self)

    async def close(self) -> None:
        if self._checking is not None:  # not cancelled: a check holds connections meanwhile
            await asyncio.wait({self._checking}, timeout=5)
        await self.pool.close()


class HeldConnection:
    """One pooled connection kept across a caller's consecutive transactions.

    A streamed load commits a transaction per chunk; while chunks keep arriving, taking the
    connection from the pool for each one would cost its check (a round trip) every time. The
    caller gives it back with release() whenever it has to wait, and after any failure the
    connection goes back at once (the pool checks or replaces it).
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: Conn | None = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with translate_errors():
            if self._conn is None:
                self._conn = await self._db.getconn()
            try:
                async with self._conn.transaction():
                    yield self._conn
            except BaseException:
                await self.release()
                raise

    async def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._db.putconn(conn)
