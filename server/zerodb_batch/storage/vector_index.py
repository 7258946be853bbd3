"""Background HNSW index builds: a partial index per large namespace, built CONCURRENTLY.

A namespace is searched exactly until it holds `IndexPolicy.threshold` vectors. Then the builder
gives it an index of its own, `((embedding::vector(D)) vector_cosine_ops)` (`halfvec(D)` above
2000 dimensions) restricted to the namespace's rows numbered up to a sequence value taken when
the build starts; searches stay exact until the namespace's row names the finished index. Rows
written later are not in it (searched exactly beside it), so writes never pay HNSW maintenance;
once enough has been written since, a new index replaces the old one.

One builder works at a time across all server processes (an advisory lock), one index at a time,
outside any transaction. A build that fails is dropped and retried later (with a growing pause);
one whose process died leaves an index that no namespace names, dropped by the next pass.

A namespace being loaded waits for its index until the load slows down (`Activity`): an index
built in the middle of a load would soon be stale, and building competes with the load for CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Final

import psycopg
from psycopg import sql

from zerodb_batch.storage import pool
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.queries import Q
from zerodb_batch.storage.vectors import hnsw_kind, hnsw_type

log = logging.getLogger(__name__)

# The builders' advisory lock (any constant unique among our advisory locks).
_LOCK_KEY: Final = 0x7A6462_766563  # "zdb" "vec"
_CANDIDATES_PER_PASS: Final = 100
_MAX_BACKOFF: Final = 60.0


@dataclass(frozen=True)
class IndexPolicy:
    """When and how namespaces get their index; see README (vectors) for the figures behind it."""

    threshold: int = 10_000  # vectors in a namespace before it gets an index
    rebuild_fraction: float = 0.1  # rebuild once max(threshold, this * count) were written since
    m: int = 16
    ef_construction: int = 64
    maintenance_work_mem: str = "1GB"  # a graph that does not fit builds many times slower
    retry_seconds: float = 60.0  # pause after a failed build (doubling with each failure)
    poll_seconds: float = 10.0
    # A namespace written faster than this waits for its index (a load is under way) until it has
    # not been written for quiet_seconds, or its index misses as many rows as it holds.
    # None: never wait.
    busy_writes_per_second: float | None = 1000.0
    quiet_seconds: float = 2.0


@dataclass(frozen=True)
class _Candidate:
    project_id: str
    namespace: str
    dim: int
    index_name: str | None
    write_count: int
    overdue: bool  # the index misses as many rows as the namespace holds
    quiet: bool  # not written for quiet_seconds


class Activity:
    """How fast each namespace is being written, from its write_count at successive passes."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], tuple[int, float]] = {}

    def busy(self, c: _Candidate, now: float, writes_per_second: float) -> bool:
        """Whether to leave the namespace for a later pass: being written, faster than the rate
        since the last pass (or at all, the first time it is seen)."""
        before = self._seen.get((c.project_id, c.namespace))
        self._seen[(c.project_id, c.namespace)] = (c.write_count, now)
        if c.overdue or c.quiet:
            return False
        if before is None:
            return True
        return (c.write_count - before[0]) / max(now - before[1], 1e-3) > writes_per_second

    def forget(self, c: _Candidate) -> None:
        self._seen.pop((c.project_id, c.namespace), None)


def index_prefix(project_id: str, namespace: str) -> str:
    """The start of every index name of a namespace (hashed: names are at most 63 bytes)."""
    digest = hashlib.sha256(f"{project_id}\0{namespace}".encode()).hexdigest()
    return f"vectors_hnsw_{digest[:16]}_"


async def build_pending(
    conn: Conn, policy: IndexPolicy, activity: Activity | None = None
) -> list[str]:
    """One pass on an autocommit connection: build every index due, one at a time; returns the
    names of the indexes made ([] when another process's builder holds the lock). Without
    `activity`, namespaces being written are not left for later."""
    cur = await conn.execute(Q["vector_index_lock"], {"key": _LOCK_KEY})
    if not (await cur.fetchone() or (False,))[0]:
        return []
    try:
        await _recover(conn)
        built = []
        for c in await _candidates(conn, policy):
            if activity and policy.busy_writes_per_second is not None:
                if activity.busy(c, time.monotonic(), policy.busy_writes_per_second):
                    continue
                activity.forget(c)
            if name := await _build(conn, c, policy):
                built.append(name)
        if built:  # the planner's statistics must know how the namespaces have grown
            await conn.execute(Q["vector_index_analyze"])
        return built
    finally:
        if not conn.closed:  # a closed session has released its lock
            await conn.execute(Q["vector_index_unlock"], {"key": _LOCK_KEY})


async def _recover(conn: Conn) -> None:
    """What dead builders left: namespaces marked building, indexes nobody serves from."""
    await conn.execute(Q["vector_index_unstick"])
    cur = await conn.execute(Q["vector_index_orphans"])
    for (name,) in await cur.fetchall():
        log.info("dropping vector index %s that no namespace uses", name)
        await _drop(conn, str(name))


async def _candidates(conn: Conn, policy: IndexPolicy) -> list[_Candidate]:
    params = {
        "threshold": policy.threshold,
        "fraction": policy.rebuild_fraction,
        "quiet_seconds": policy.quiet_seconds,
        "limit": _CANDIDATES_PER_PASS,
    }
    cur = await conn.execute(Q["vector_index_candidates"], params)
    return [_Candidate(*row) for row in await cur.fetchall()]  # type: ignore[arg-type]


async def _build(conn: Conn, c: _Candidate, policy: IndexPolicy) -> str | None:
    """Build, then serve from, a new index of the namespace; None if the build failed."""
    key = {"project_id": c.project_id, "namespace": c.namespace}
    cur = await conn.execute(Q["vector_index_begin"], key)
    begun = await cur.fetchone()
    if begun is None:
        return None  # the namespace went away
    write_count, seq = begun
    name = f"{index_prefix(c.project_id, c.namespace)}{seq}"
    try:
        await conn.execute(_create_statement(name, c, int(seq), policy))  # type: ignore[call-overload]
    except psycopg.Error as e:
        await _failed(conn, c, name, e, policy)
        return None
    ready = {**key, "index_name": name, "seq": seq, "write_count": write_count}
    await conn.execute(Q["vector_index_ready"], ready)
    if c.index_name:
        await _drop(conn, c.index_name)
    log.info("vector index %s ready for %s/%s", name, c.project_id, c.namespace)
    return name


def _create_statement(name: str, c: _Candidate, seq: int, policy: IndexPolicy) -> sql.Composed:
    return sql.SQL(Q["vector_index_create"]).format(
        name=sql.Identifier(name),
        itype=hnsw_type(c.dim),
        opclass=sql.SQL(f"{hnsw_kind(c.dim)}_cosine_ops"),
        m=sql.Literal(policy.m),
        ef_construction=sql.Literal(policy.ef_construction),
        project_id=sql.Literal(c.project_id),
        namespace=sql.Literal(c.namespace),
        seq=sql.Literal(seq),
    )


async def _failed(
    conn: Conn, c: _Candidate, name: str, error: psycopg.Error, policy: IndexPolicy
) -> None:
    if conn.broken:
        raise error  # nothing can be recorded; the next pass cleans up
    log.warning("vector index build for %s/%s failed: %s", c.project_id, c.namespace, error)
    await _drop(conn, name)  # CREATE INDEX CONCURRENTLY leaves an INVALID index behind
    params = {
        "project_id": c.project_id,
        "namespace": c.namespace,
        "error": str(error)[:1000],
        "retry_seconds": policy.retry_seconds,
    }
    await conn.execute(Q["vector_index_failed"], params)


async def _drop(conn: Conn, name: str) -> None:
    await conn.execute(sql.SQL(Q["vector_index_drop"]).format(name=sql.Identifier(name)))


class IndexBuilder:
    """The task the app starts: a pass every `poll_seconds`, or sooner after wake()."""

    def __init__(self, database_url: str, policy: IndexPolicy | None = None) -> None:
        self._url = database_url
        self.policy = policy or IndexPolicy()
        self._wake = asyncio.Event()
        self._activity = Activity()

    def wake(self) -> None:
        """Look for work soon (say, after a load ended: once it has been quiet for
        quiet_seconds), not at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Forever, on a connection of its own (a build can take minutes; a pooled connection
        would be missed meanwhile); reconnects after a failure."""
        failures = 0
        while True:
            try:
                await self._serve()
            except Exception as e:
                # Cancelled in the middle of a query, psycopg closes the connection, and closing
                # it may raise in place of the cancellation: that is the end, not a failure.
                if (task := asyncio.current_task()) and task.cancelling():
                    raise asyncio.CancelledError from e
                if isinstance(e, psycopg.Error):
                    log.warning("vector index builder lost PostgreSQL (%s); retrying", e)
                else:  # a bug must not end index building for the life of the process
                    log.exception("vector index builder failed; restarting it")
            failures += 1
            await asyncio.sleep(min(self.policy.poll_seconds * 2 ** min(failures, 6), _MAX_BACKOFF))

    async def _serve(self) -> None:
        async with await pool.connect(self._url) as conn:
            await conn.execute(
                "SELECT set_config('maintenance_work_mem', %s, false)",
                (self.policy.maintenance_work_mem,),
            )
            while True:
                await build_pending(conn, self.policy, self._activity)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.policy.poll_seconds)
                    await asyncio.sleep(self.policy.quiet_seconds)  # woken: let writes settle
                self._wake.clear()
