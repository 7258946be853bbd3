"""The table registry: create (with its indexes), list, resolve and delete tables of a project."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import psycopg
from psycopg import sql
from psycopg.rows import args_row

from zerodb_batch.domain.table_fields import Path
from zerodb_batch.domain.table_ops import TableSpec
from zerodb_batch.errors import AlreadyExists, NotFound
from zerodb_batch.storage import table_sql
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.queries import Q

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableInfo:
    """A table as the registry holds it; `table_id` is internal (never shown to callers)."""

    project_id: str
    table_id: int
    name: str
    description: str
    indexed_fields: tuple[str, ...]  # dotted paths
    create_time: datetime


def _info(
    project_id: str,
    table_id: int,
    name: str,
    description: str,
    fields: list[str],
    create_time: datetime,
) -> TableInfo:
    return TableInfo(project_id, table_id, name, description, tuple(fields), create_time)


def _infos(conn: Conn) -> psycopg.AsyncCursor[TableInfo]:
    return conn.cursor(row_factory=args_row(_info))


async def create(conn: Conn, project_id: str, spec: TableSpec) -> TableInfo:
    """Register the table, then build an index per indexed field.

    `conn` must be in autocommit mode, outside a transaction: the indexes are built with CREATE
    INDEX CONCURRENTLY, which blocks no reader or writer of other tables (a plain CREATE INDEX
    would stop every write to table_rows while it scans it). The table exists, empty and
    queryable, while its indexes are built. AlreadyExists when the name is taken. If building
    an index fails, the table is removed again and the error raised (a process that dies
    meanwhile leaves a table with an index missing or invalid: sync_indexes() repairs it).
    """
    params = {
        "project_id": project_id,
        "name": spec.name,
        "description": spec.description,
        "indexed_fields": [".".join(path) for path in spec.indexed_fields],
    }
    try:
        cur = await _infos(conn).execute(Q["table_create"], params)
    except psycopg.errors.UniqueViolation as e:
        raise AlreadyExists(
            f"table {spec.name!r} already exists in this project", reason="TABLE_EXISTS",
            metadata={"table": spec.name},
        ) from e  # fmt: skip
    info = await cur.fetchone()
    assert info is not None  # INSERT ... RETURNING of one row
    if spec.indexed_fields:
        await _build_indexes(conn, info, spec.indexed_fields)
    return info


async def _build_indexes(conn: Conn, info: TableInfo, fields: tuple[Path, ...]) -> None:
    # Held (shared) while building, so that sync_indexes() never takes these indexes, invalid
    # until built, or missing until their turn, for leftovers of a crash.
    await conn.execute(Q["table_index_build_begin"])
    try:
        for n, path in enumerate(fields):
            await conn.execute(table_sql.index_ddl(info.table_id, n, path))
    except Exception:
        params = {"project_id": info.project_id, "table_id": info.table_id}
        await conn.execute(Q["table_forget"], params)
        await _drop_leftovers(conn, info.table_id, len(fields))
        raise
    finally:
        await conn.execute(Q["table_index_build_end"])


async def _drop_leftovers(conn: Conn, table_id: int, count: int) -> None:
    """Best effort: what this fails to drop, sync_indexes() drops later (the table is gone)."""
    try:
        await _drop_indexes(conn, table_id, count)
    except psycopg.Error as e:
        log.warning("indexes of table %s left for sync_indexes: %s", table_id, e)


async def resolve(conn: Conn, project_id: str, names: Sequence[str]) -> dict[str, TableInfo]:
    """The project's tables among `names`, by name (absent names are not found)."""
    params = {"project_id": project_id, "names": list(names)}
    cur = await _infos(conn).execute(Q["table_resolve"], params)
    return {info.name: info for info in await cur.fetchall()}


async def list_page(conn: Conn, project_id: str, after: str | None, limit: int) -> list[TableInfo]:
    """Up to `limit` tables in name order, starting after the name `after` (None: the first)."""
    params = {"project_id": project_id, "after": after, "limit": limit}
    cur = await _infos(conn).execute(Q["table_list"], params)
    return await cur.fetchall()


async def delete(conn: Conn, project_id: str, name: str) -> int:
    """Delete the table and its rows; returns how many rows it had. NotFound if unknown.

    `conn` must be in autocommit mode, outside a transaction: the table and its rows go in one
    transaction, then its indexes are dropped CONCURRENTLY (a plain DROP INDEX would lock every
    table's rows while it waits). An index left behind by a crash in between holds no rows and
    is dropped by sync_indexes().
    """
    async with conn.transaction():
        cur = await conn.execute(Q["table_delete"], {"project_id": project_id, "name": name})
        found = await cur.fetchone()
        if found is None:
            raise NotFound(f"table {name!r} does not exist in this project",
                           reason="TABLE_NOT_FOUND", metadata={"table": name})  # fmt: skip
        table_id, fields = cast(tuple[int, list[str]], found)
        params = {"project_id": project_id, "table_id": table_id}
        deleted = (await conn.execute(Q["table_delete_rows"], params)).rowcount
    await _drop_indexes(conn, table_id, len(fields))
    return deleted


async def _drop_indexes(conn: Conn, table_id: int, count: int) -> None:
    for n in range(count):
        await _drop_index(conn, table_sql.index_name(table_id, n))


async def _drop_index(conn: Conn, name: str) -> None:
    stmt = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name))
    await conn.execute(stmt)


async def sync_indexes(conn: Conn) -> list[str]:
    """Make the table indexes match the registry after a crash; returns the names changed.

    Drops indexes of deleted tables and invalid ones (an interrupted CREATE INDEX CONCURRENTLY),
    then builds the indexes that registered tables lack. `conn` as for create(). Does nothing
    while any create() is building indexes (on any server): run it again later.
    """
    cur = await conn.execute(Q["table_index_sync_begin"])
    if not (await cur.fetchone() or (False,))[0]:
        return []
    try:
        changed = await _drop_unwanted(conn)
        changed += await _build_missing(conn)
    finally:
        await conn.execute(Q["table_index_sync_end"])
    if changed:
        log.info("table indexes synced: %s", ", ".join(changed))
    return changed


async def _drop_unwanted(conn: Conn) -> list[str]:
    indexes = await (await conn.execute(Q["table_indexes"])).fetchall()
    dropped = []
    for name, valid, wanted in cast(list[tuple[str, bool, bool]], indexes):
        if not (valid and wanted):
            await _drop_index(conn, name)
            dropped.append(name)
    return dropped


async def _build_missing(conn: Conn) -> list[str]:
    cur = await conn.execute(Q["table_indexes"])
    present = {name for name, _, _ in cast(list[tuple[str, bool, bool]], await cur.fetchall())}
    tables = await (await conn.execute(Q["table_fields_indexed"])).fetchall()
    built = []
    for table_id, fields in cast(list[tuple[int, list[str]]], tables):
        for n, field in enumerate(fields):
            name = table_sql.index_name(table_id, n)
            if name not in present:
                await conn.execute(table_sql.index_ddl(table_id, n, tuple(field.split("."))))
                built.append(name)
    return built
