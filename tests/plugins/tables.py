"""Table storage fixtures: the session database migrated, an event loop with one connection to it
(so that plain tests and hypothesis examples can call the async storage), and a pair of tables,
plain and indexed, holding the same rows."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from hypothesis import settings

from zerodb_batch import limits
from zerodb_batch.domain.table_fields import Path
from zerodb_batch.domain.table_filter import MATCH_ALL
from zerodb_batch.domain.table_ops import RowQuery, TableSpec
from zerodb_batch.domain.validate import Checker, dict_to_struct, struct_to_dict
from zerodb_batch.storage import table_rows, tables
from zerodb_batch.storage.migrate import migrate
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.tables import TableInfo

T = TypeVar("T")

# CI (CI=true) runs the same examples on every run: a red build is then a bug to reproduce, not a
# draw of the dice; developers' runs keep exploring new examples.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


class Loop:
    """An event loop and an autocommit connection on the test database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.conns: list[Conn] = []
        self.conn = self.connect()
        self.project = f"p-{uuid.uuid4()}"

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def connect(self) -> Conn:
        """A connection (autocommit) to the test database, closed by close()."""
        conn = self.run(psycopg.AsyncConnection.connect(self.url, autocommit=True))
        self.conns.append(conn)
        return conn

    def table(self, name: str, *indexed: str) -> TableInfo:
        """A new table of this test's project, indexed on the dotted paths given."""
        fields: tuple[Path, ...] = tuple(tuple(f.split(".")) for f in indexed)
        return self.run(tables.create(self.conn, self.project, TableSpec(name, "", fields)))

    def close(self) -> None:
        for conn in self.conns:
            self.run(conn.close())
        self.loop.close()


# The fields the property tests' documents index (see tests/integration/table_reference.py).
INDEXED_FIELDS = ("a", "n", "s", "t.x", "arr.0", "b")


class Pair:
    """The same documents in a plain table and in an indexed one, read with sequential scans off
    so that the indexes are used wherever they can be."""

    def __init__(self, aloop: Loop) -> None:
        self.aloop = aloop
        self.plain = aloop.table("plain")
        self.indexed = aloop.table("indexed", *INDEXED_FIELDS)
        self.index_conn: Conn = aloop.connect()
        aloop.run(self.index_conn.execute("SET enable_seqscan = off"))

    def load(self, docs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
        """Replace both tables' rows with `docs`; returns, per table name, row id -> document
        as stored."""
        texts = [as_stored(doc) for doc in docs]
        stored: dict[str, dict[str, dict[str, Any]]] = {}
        for table in (self.plain, self.indexed):
            self.aloop.run(table_rows.delete(self.aloop.conn, table, MATCH_ALL))
            ids = self.aloop.run(table_rows.insert(self.aloop.conn, table, texts)) if texts else []
            stored[table.name] = dict(zip(ids, map(json.loads, texts), strict=True))
        return stored

    def ids(self, table: TableInfo, q: RowQuery) -> list[str]:
        conn = self.index_conn if table is self.indexed else self.aloop.conn
        page = self.aloop.run(table_rows.query(conn, table, q))
        return [row.row_id for row in page.rows]


def as_stored(doc: dict[str, Any]) -> str:
    """The JSON text an insert stores for `doc` sent as a protobuf Struct."""
    return Checker("").json_object("row", dict_to_struct(doc), limits.MAX_ROW_BYTES)


def through_struct(value: dict[str, Any]) -> dict[str, Any]:
    """A filter as the server receives it: Struct numbers are doubles."""
    return struct_to_dict(dict_to_struct(value))


@pytest.fixture(scope="session")
def tables_url(database_url: str) -> str:
    """The session database with every migration applied."""

    async def apply() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await migrate(conn)

    asyncio.run(apply())
    return database_url


@pytest.fixture
def aloop(tables_url: str) -> Iterator[Loop]:
    """A loop and connection for one test, with a project id of its own."""
    running = Loop(tables_url)
    yield running
    running.close()


@pytest.fixture
def pair(aloop: Loop) -> Pair:
    """Two tables of one project: "plain", and "indexed" on INDEXED_FIELDS."""
    return Pair(aloop)
