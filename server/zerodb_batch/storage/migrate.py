"""Numbered forward-only migrations (`NNNN_name.sql`), applied once each, in order.

Each migration commits on its own, in one transaction with its row in `schema_migrations`: one
that fails leaves nothing of itself behind, the ones before it stay applied, and the next start
tries it again.

A migration whose first line is the marker

    -- migration: no-transaction

runs outside any transaction (for `CREATE INDEX CONCURRENTLY`, which refuses to run inside one),
one statement at a time: PostgreSQL runs a query of several statements as one implicit
transaction. Its statements commit one by one, and its ledger row only after the last, so a
failure halfway (or a crash) leaves the earlier statements applied and the next start runs the
whole file again. Every statement of such a file must therefore be safe to repeat: `IF NOT EXISTS`
/ `IF EXISTS`, and `DROP INDEX CONCURRENTLY IF EXISTS x;` before `CREATE INDEX CONCURRENTLY x ...`,
because a concurrent build that fails leaves `x` behind INVALID (kept up to date by writes, never
used by queries), which `IF NOT EXISTS` would keep as it is. Give each such index build a file of
its own, so that a re-run rebuilds only what failed.

Servers starting together take turns on a session-level advisory lock, held from the first
migration to the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import LiteralString

import psycopg
import sqlparse

from zerodb_batch.errors import StartupError

log = logging.getLogger(__name__)

NO_TRANSACTION = "-- migration: no-transaction"
# Any constant works; it serialises the servers that migrate one database at the same time.
_LOCK_ID = 0x7A65726F6462
# The lock is polled, not waited for: a session blocked in pg_advisory_lock() holds a snapshot,
# and CREATE INDEX CONCURRENTLY waits for every older snapshot in the database, so the holder
# building an index and a waiter would deadlock.
_LOCK_POLL_SECONDS = 0.2

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    apply_time timestamptz NOT NULL DEFAULT now()
)"""
_RECORD = "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)"

Connection = psycopg.AsyncConnection[tuple[object, ...]]


@dataclass(frozen=True)
class Migration:
    """One file of migrations: `version` from its name, its SQL, how it runs."""

    version: int
    name: str
    sql: LiteralString

    @property
    def transactional(self) -> bool:
        return self.sql.split("\n", 1)[0].strip() != NO_TRANSACTION

    def statements(self) -> list[LiteralString]:
        """The SQL split into statements as PostgreSQL reads them (quotes, dollar quotes and
        comments respected), leaving out pieces that are only comments."""
        pieces: list[LiteralString] = sqlparse.split(self.sql, strip_semicolon=True)
        return [p for p in pieces if sqlparse.format(p, strip_comments=True).strip()]


def packaged() -> Traversable:
    """The migrations that ship with the server."""
    return resources.files("zerodb_batch.storage").joinpath("migrations")


def available(source: Traversable | None = None) -> list[Migration]:
    """Every migration in `source` (default: the packaged ones), by version."""
    found: list[Migration] = []
    for entry in (source or packaged()).iterdir():
        if entry.name.endswith(".sql"):
            version = _version(entry.name)
            sql: LiteralString = entry.read_text()  # our own files, never caller input
            found.append(Migration(version, entry.name, sql))
    found.sort(key=lambda m: m.version)
    for before, after in itertools.pairwise(found):
        if before.version == after.version:
            raise StartupError(f"migrations {before.name} and {after.name} share a version")
    return found


def _version(name: str) -> int:
    try:
        return int(name.split("_", 1)[0])
    except ValueError:
        raise StartupError(f"migration {name!r} is not named NNNN_name.sql") from None


async def check_pgvector(conn: Connection) -> None:
    """Fail start-up with a clear message when the server lacks pgvector."""
    cur = await conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
    if await cur.fetchone() is None:
        raise StartupError(
            "PostgreSQL has no 'vector' extension (pgvector), which zerodb-batch needs for "
            "vectors. Install pgvector on that server, or unset ZERODB_DATABASE_URL to use the "
            "embedded PostgreSQL that ships with it."
        )


async def migrate(conn: Connection, source: Traversable | None = None) -> list[str]:
    """Apply the pending migrations of `source` (default: the packaged ones), each committed on
    its own; returns the names applied. `conn` must be in autocommit mode."""
    if not conn.autocommit:
        raise ValueError("migrate() needs a connection in autocommit mode")
    await check_pgvector(conn)
    applied: list[str] = []
    async with _turn(conn):
        await conn.execute(_LEDGER)
        cur = await conn.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for migration in available(source):
            if migration.version not in done:
                await _apply(conn, migration)
                log.info("applied migration %s", migration.name)
                applied.append(migration.name)
    return applied


@contextlib.asynccontextmanager
async def _turn(conn: Connection) -> AsyncIterator[None]:
    """Hold the migration lock of this database (another server may be migrating it now)."""
    waiting = False
    while not await _try_lock(conn):
        if not waiting:
            log.info("waiting for another server's migrations to finish")
            waiting = True
        await asyncio.sleep(_LOCK_POLL_SECONDS)
    try:
        yield
    finally:
        # A broken connection has lost the lock with its session.
        with contextlib.suppress(psycopg.OperationalError):
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))


async def _try_lock(conn: Connection) -> bool:
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_ID,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def _apply(conn: Connection, migration: Migration) -> None:
    if migration.transactional:
        try:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(_RECORD, (migration.version, migration.name))
        except psycopg.Error as e:
            raise StartupError(
                f"migration {migration.name} failed (nothing of it applied): {e}"
            ) from e
        return
    statements = migration.statements()
    for number, statement in enumerate(statements, 1):
        try:
            await conn.execute(statement)
        except psycopg.Error as e:
            raise StartupError(
                f"migration {migration.name} failed at statement {number} of {len(statements)} "
                f"(the earlier ones stay applied; the next start runs the file again): {e}"
            ) from e
    await conn.execute(_RECORD, (migration.version, migration.name))
