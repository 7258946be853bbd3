"""Numbered forward-only migrations (`migrations/NNNN_name.sql`), applied once each, in order."""

from __future__ import annotations

import logging
from importlib import resources
from typing import LiteralString

import psycopg

from zerodb_batch.errors import StartupError

log = logging.getLogger(__name__)

# Any constant works; it serialises replicas that start at the same time.
_LOCK_ID = 0x7A65726F6462

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    apply_time timestamptz NOT NULL DEFAULT now()
)"""


def available() -> list[tuple[int, str, LiteralString]]:
    """(version, name, sql) of every packaged migration, by version."""
    found: list[tuple[int, str, LiteralString]] = []
    for entry in resources.files("zerodb_batch.storage").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


async def check_pgvector(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
    """Fail start-up with a clear message when the server lacks pgvector."""
    cur = await conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
    if await cur.fetchone() is None:
        raise StartupError(
            "PostgreSQL has no 'vector' extension (pgvector), which zerodb-batch needs for "
            "vectors. Install pgvector on that server, or unset ZERODB_DATABASE_URL to use the "
            "embedded PostgreSQL that ships with it."
        )


async def migrate(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> list[str]:
    """Apply pending migrations, each in its own transaction; returns the names applied."""
    await check_pgvector(conn)
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        await conn.execute(_LEDGER)
        cur = await conn.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for version, name, sql in available():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
                )
            log.info("applied migration %s", name)
            applied.append(name)
    return applied
