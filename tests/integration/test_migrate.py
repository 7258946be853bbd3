"""The migration runner on a real PostgreSQL, with migration files of the tests' own: one
transaction per migration, no-transaction migrations (CREATE INDEX CONCURRENTLY) and what a failure
halfway leaves, and several servers migrating one database at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from zerodb_batch.errors import StartupError
from zerodb_batch.storage.migrate import NO_TRANSACTION, available, migrate
from zerodb_batch.storage.pool import Conn

TABLE = "CREATE TABLE t (a int, b int);\nINSERT INTO t SELECT n, n FROM generate_series(1, 2000) n;"
INDEXES = f"""{NO_TRANSACTION}
-- Safe to run again: a failed concurrent build leaves its index INVALID, so drop it first.
DROP INDEX CONCURRENTLY IF EXISTS t_a;
CREATE INDEX CONCURRENTLY t_a ON t (a);
DROP INDEX CONCURRENTLY IF EXISTS t_b_unique;
CREATE UNIQUE INDEX CONCURRENTLY t_b_unique ON t (b);
"""


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


async def connect(url: str, name: str = "test") -> Conn:
    return await psycopg.AsyncConnection.connect(url, autocommit=True, application_name=name)


def run_migrate(url: str, source: Path) -> list[str]:
    async def go() -> list[str]:
        async with await connect(url) as conn:
            return await migrate(conn, source)

    return asyncio.run(go())


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def ledger(url: str) -> list[object]:
    return [r[0] for r in query(url, "SELECT version FROM schema_migrations ORDER BY version")]


def indexes(url: str) -> dict[object, object]:
    """Index name -> valid, for table t."""
    rows = query(
        url,
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = 't'::regclass",
    )
    return dict(rows)  # type: ignore[arg-type]


def test_the_packaged_migrations_are_found_in_order() -> None:
    versions = [m.version for m in available()]
    assert versions == sorted(versions) and versions[:3] == [1, 2, 3]
    assert all(m.transactional for m in available())


def test_each_migration_commits_on_its_own(own_database: str, tmp_path: Path) -> None:
    source = write(
        tmp_path / "m",
        {
            "0001_a.sql": "CREATE TABLE a (x int);",
            "0002_b.sql": "CREATE TABLE b (x int);",
            "0003_broken.sql": "CREATE TABLE c (x int);\nSELECT 1 / 0;",
        },
    )
    with pytest.raises(StartupError, match=r"migration 0003_broken.sql failed \(nothing of it"):
        run_migrate(own_database, source)
    assert ledger(own_database) == [1, 2]  # the two before it stay applied
    tables = {r[0] for r in query(own_database, "SELECT tablename FROM pg_tables")}
    assert {"a", "b"} <= tables and "c" not in tables

    (source / "0003_broken.sql").write_text("CREATE TABLE c (x int);")
    assert run_migrate(own_database, source) == ["0003_broken.sql"]
    assert ledger(own_database) == [1, 2, 3]


def test_a_no_transaction_migration_builds_indexes_concurrently(
    own_database: str, tmp_path: Path
) -> None:
    source = write(tmp_path / "m", {"0001_t.sql": TABLE, "0002_indexes.sql": INDEXES})
    assert run_migrate(own_database, source) == ["0001_t.sql", "0002_indexes.sql"]
    assert indexes(own_database) == {"t_a": True, "t_b_unique": True}
    assert run_migrate(own_database, source) == []


def test_a_failure_halfway_leaves_an_invalid_index_that_a_rerun_replaces(
    own_database: str, tmp_path: Path
) -> None:
    duplicates = TABLE + "\nINSERT INTO t VALUES (0, 7);"  # b = 7 twice: the unique build fails
    source = write(tmp_path / "m", {"0001_t.sql": duplicates, "0002_indexes.sql": INDEXES})
    with pytest.raises(StartupError, match=r"0002_indexes.sql failed at statement 4 of 4"):
        run_migrate(own_database, source)
    assert ledger(own_database) == [1]
    assert indexes(own_database) == {"t_a": True, "t_b_unique": False}  # left INVALID

    query(own_database, "DELETE FROM t WHERE a = 0 RETURNING a")
    assert run_migrate(own_database, source) == ["0002_indexes.sql"]
    assert indexes(own_database) == {"t_a": True, "t_b_unique": True}
    assert ledger(own_database) == [1, 2]


def test_servers_migrating_at_once_apply_each_migration_once(
    own_database: str, tmp_path: Path
) -> None:
    source = write(
        tmp_path / "m",
        {
            "0001_t.sql": TABLE,
            "0002_indexes.sql": INDEXES,
            "0003_counter.sql": "CREATE TABLE runs (n int);\nINSERT INTO runs VALUES (1);",
            "0004_more.sql": "INSERT INTO runs VALUES (2);",
        },
    )

    async def together() -> list[list[str]]:
        conns = [await connect(own_database, f"migrator-{n}") for n in range(4)]
        try:
            return list(await asyncio.gather(*(migrate(c, source) for c in conns)))
        finally:
            for conn in conns:
                await conn.close()

    applied = asyncio.run(together())
    names = sorted(name for each in applied for name in each)
    assert names == ["0001_t.sql", "0002_indexes.sql", "0003_counter.sql", "0004_more.sql"]
    assert query(own_database, "SELECT n FROM runs ORDER BY n") == [(1,), (2,)]
    assert indexes(own_database) == {"t_a": True, "t_b_unique": True}


def test_a_server_waiting_its_turn_does_not_deadlock_an_index_build(
    own_database: str, tmp_path: Path
) -> None:
    """CREATE INDEX CONCURRENTLY waits for every older snapshot in the database; a second server
    must wait for the migration lock without holding one, or the two deadlock."""
    source = write(tmp_path / "m", {"0001_t.sql": TABLE, "0002_indexes.sql": INDEXES})
    run_migrate(own_database, write(tmp_path / "first", {"0001_t.sql": TABLE}))

    async def scenario() -> tuple[list[str], list[str]]:
        async with (
            await connect(own_database, "holder") as holder,
            await connect(own_database, "observer") as observer,
            await connect(own_database, "builder") as builder_conn,
            await connect(own_database, "waiter") as waiter_conn,
        ):
            async with holder.transaction():  # holds the index build at its start
                await holder.execute("LOCK TABLE t IN SHARE UPDATE EXCLUSIVE MODE")
                builder = asyncio.create_task(migrate(builder_conn, source))
                await until(observer, "builder", "wait_event_type", "Lock")
                waiter = asyncio.create_task(migrate(waiter_conn, source))
                await until(observer, "waiter", "query", "%advisory_lock%")
            return await builder, await waiter

    built, waited = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert (built, waited) == (["0002_indexes.sql"], [])
    assert indexes(own_database) == {"t_a": True, "t_b_unique": True}


async def until(observer: Conn, name: str, column: str, pattern: str) -> None:
    """Poll pg_stat_activity until the session `name` has `column` LIKE `pattern`."""
    check = sql.SQL(
        "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND {} LIKE %s"
    ).format(sql.Identifier(column))
    for _ in range(600):
        if await (await observer.execute(check, (name, pattern))).fetchone():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"session {name} never had {column} like {pattern!r}")
