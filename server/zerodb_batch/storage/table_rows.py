"""The rows of one table: query, count, insert, update and delete, each one set-based statement on
the connection given (the caller chooses the transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import psycopg
import uuid_utils.compat
from psycopg import sql

from zerodb_batch.domain.table_fields import project
from zerodb_batch.domain.table_filter import Filter
from zerodb_batch.domain.table_ops import RowQuery
from zerodb_batch.domain.table_update import Update
from zerodb_batch.errors import InvalidArgument, NotFound, Violation
from zerodb_batch.storage import table_sql
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.queries import Q
from zerodb_batch.storage.tables import TableInfo

T = TypeVar("T")
Cursor = psycopg.AsyncCursor[tuple[Any, ...]]

# SQLSTATE of table_row_update() (0005_tables.sql) when a row does not fit an update operator.
_UPDATE_MISFIT = "ZB001"
_MISFITS = {
    "NOT_A_NUMBER": "$inc needs a number field; a matching row has {found} there",
    "NOT_AN_ARRAY": "needs an array field; a matching row has {found} there",
    "PARENT_NOT_AN_OBJECT": "a parent of this field is {found} in a matching row, not an object",
}


_ARTICLED = {"string": "a string", "number": "a number", "boolean": "a boolean", "null": "null",
             "array": "an array", "object": "an object"}  # fmt: skip


@dataclass(frozen=True)
class StoredRow:
    row_id: str
    row_data: dict[str, Any]
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class RowPage:
    rows: list[StoredRow]
    has_more: bool  # more rows match after these


def _statement(name: str, **parts: sql.Composable) -> sql.Composed:
    return sql.SQL(Q[name]).format(**parts)


def _base(table: TableInfo, params: table_sql.Params) -> dict[str, object]:
    return {**params.values, "project_id": table.project_id, "table_id": table.table_id}


@dataclass(frozen=True)
class Sent(Generic[T]):
    """A read sent without waiting for its answer (in pipeline mode: the next statement can go
    out, and be composed here, while PostgreSQL runs this one); `result()` waits for it."""

    cursor: Cursor
    read: Callable[[list[tuple[Any, ...]]], T]

    async def result(self) -> T:
        return self.read(await self.cursor.fetchall())


async def query(conn: Conn, table: TableInfo, q: RowQuery) -> RowPage:
    """One page of matching rows (`q.skip`, then up to `q.limit`), projected as asked."""
    return await (await send_query(conn, table, q)).result()


async def send_query(conn: Conn, table: TableInfo, q: RowQuery) -> Sent[RowPage]:
    """query(), its answer read later (see Sent)."""
    stmt, values = query_statement(table, q)
    cur = await conn.execute(stmt, values, prepare=False)  # planned with the values: see table_sql

    def page(found: list[tuple[Any, ...]]) -> RowPage:
        rows = [_row(row, q) for row in found]
        return RowPage(rows[: q.limit], len(rows) > q.limit)

    return Sent(cur, page)


def query_statement(table: TableInfo, q: RowQuery) -> tuple[sql.Composed, dict[str, object]]:
    """The SELECT that query() runs (limit + 1 rows, to know has_more), with its parameters."""
    params = table_sql.Params()
    stmt = _statement(
        "table_rows_query",
        where=table_sql.where(q.filter, params),
        order=table_sql.order_by(q.sort, params),
    )
    return stmt, {**_base(table, params), "skip": q.skip, "limit": q.limit + 1}


def _row(row: tuple[Any, ...], q: RowQuery) -> StoredRow:
    row_id, data, create_time, update_time = row
    data = project(data, q.projection) if q.projection else data
    return StoredRow(str(row_id), data, create_time, update_time)


async def count(conn: Conn, table: TableInfo, tree: Filter) -> int:
    return await (await send_count(conn, table, tree)).result()


async def send_count(conn: Conn, table: TableInfo, tree: Filter) -> Sent[int]:
    """count(), its answer read later (see Sent)."""
    params = table_sql.Params()
    stmt = _statement("table_rows_count", where=table_sql.where(tree, params))
    cur = await conn.execute(stmt, _base(table, params), prepare=False)
    return Sent(cur, lambda found: int(found[0][0]))


async def insert(conn: Conn, table: TableInfo, rows: Sequence[str]) -> list[str]:
    """Insert rows (JSON objects as text) under new UUIDv7 ids, in one statement; returns the ids
    in the order of `rows`. NotFound if the table was deleted meanwhile."""
    ids = [new_row_id() for _ in rows]
    params = {
        "project_id": table.project_id,
        "table_id": table.table_id,
        "row_ids": ids,
        "rows": list(rows),
    }
    cur = await conn.execute(Q["table_rows_insert"], params)
    if cur.rowcount != len(rows):
        raise NotFound(f"table {table.name!r} does not exist in this project",
                       reason="TABLE_NOT_FOUND", metadata={"table": table.name})  # fmt: skip
    return [str(i) for i in ids]


async def update(conn: Conn, table: TableInfo, tree: Filter, change: Update) -> tuple[int, int]:
    """Apply `change` to every matching row; returns (matched, modified), where a matched row
    whose value the update leaves equal is not modified (and not written).

    A row that does not fit the update (`$inc` on a string...) fails the whole statement:
    InvalidArgument naming the update's field; nothing is written (the caller's transaction is
    then failed, and must be rolled back, to its savepoint if it has one).
    """
    params = table_sql.Params()
    stmt = _statement(
        "table_rows_update",
        where=table_sql.where(tree, params),
        updated=table_sql.updated(change, params),
    )
    try:
        cur = await conn.execute(stmt, _base(table, params), prepare=False)
    except psycopg.Error as e:
        if e.sqlstate != _UPDATE_MISFIT:
            raise
        raise _misfit(e, change) from None
    counts = await cur.fetchone()
    assert counts is not None  # aggregates always return a row
    return int(counts[0]), int(counts[1])  # type: ignore[call-overload]


def _misfit(error: psycopg.Error, change: Update) -> InvalidArgument:
    item = change.items[int(error.diag.message_detail or 0)]
    reason = error.diag.message_hint or "TYPE_MISMATCH"
    found = _ARTICLED.get(error.diag.message_primary or "", "another type")
    description = _MISFITS.get(reason, "does not fit a matching row ({found})").format(found=found)
    return InvalidArgument(
        f"the update does not fit every matching row: {item.field} {description}; "
        "nothing was changed",
        violations=[Violation(item.field, description, reason)],
    )


async def delete(conn: Conn, table: TableInfo, tree: Filter) -> int:
    """Delete the matching rows; returns how many."""
    params = table_sql.Params()
    stmt = _statement("table_rows_delete", where=table_sql.where(tree, params))
    cur = await conn.execute(stmt, _base(table, params), prepare=False)
    return cur.rowcount


def new_row_id() -> uuid.UUID:
    """A time-ordered row id (UUIDv7): new rows append to the end of the primary key's index
    instead of landing on a random page of it, as random UUIDs would on a large table."""
    return uuid_utils.compat.uuid7()
