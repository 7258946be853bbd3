"""Table fixtures: the session database migrated, an event loop with one connection to it (so that
plain tests and hypothesis examples can call the async storage), a pair of tables, plain and
indexed, holding the same rows; and for the API tests, a TableService stub and table helpers."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import grpc
import psycopg
import pytest
from google.protobuf import json_format
from hypothesis import settings
from psycopg import sql

from tests.plugins.server import Project
from zerodb.v1 import table_pb2
from zerodb.v1.table_pb2_grpc import TableServiceStub
from zerodb_batch import limits
from zerodb_batch.domain.struct_json import to_dict as struct_to_dict
from zerodb_batch.domain.struct_json import to_struct as dict_to_struct
from zerodb_batch.domain.table_fields import Path
from zerodb_batch.domain.table_filter import And, Exists
from zerodb_batch.domain.table_ops import RowQuery, TableSpec
from zerodb_batch.domain.validate import Checker
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
    """The same documents in a plain table and in an indexed one.

    The planner must choose the indexes for them to matter: the indexed table also holds
    PADDING rows without any indexed field, analyzed, so that the field indexes look (and are)
    far more selective than walking the table's primary key, and it is read with sequential
    scans off. Every read leaves the padding out, with a condition no index serves.
    """

    PADDING = 3000

    def __init__(self, aloop: Loop) -> None:
        self.aloop = aloop
        self.plain = aloop.table("plain")
        self.indexed = aloop.table("indexed", *INDEXED_FIELDS)
        padding = [json.dumps({"pad": i}) for i in range(self.PADDING)]
        aloop.run(table_rows.insert(aloop.conn, self.indexed, padding))
        aloop.run(aloop.conn.execute("ANALYZE table_rows"))
        self.index_conn: Conn = aloop.connect()
        aloop.run(self.index_conn.execute("SET enable_seqscan = off"))

    def load(self, docs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
        """Replace both tables' documents with `docs`; returns, per table name, row id ->
        document as stored."""
        texts = [as_stored(doc) for doc in docs]
        stored: dict[str, dict[str, dict[str, Any]]] = {}
        for table in (self.plain, self.indexed):
            self.aloop.run(table_rows.delete(self.aloop.conn, table, _NOT_PADDING))
            ids = self.aloop.run(table_rows.insert(self.aloop.conn, table, texts)) if texts else []
            stored[table.name] = dict(zip(ids, map(json.loads, texts), strict=True))
        return stored

    def page(self, table: TableInfo, q: RowQuery) -> table_rows.RowPage:
        """`q` on `table`, padding left out."""
        conn = self.index_conn if table is self.indexed else self.aloop.conn
        unpadded = replace(q, filter=And((q.filter, _NOT_PADDING)))
        return self.aloop.run(table_rows.query(conn, table, unpadded))

    def ids(self, table: TableInfo, q: RowQuery) -> list[str]:
        return [row.row_id for row in self.page(table, q).rows]

    def plan(self, q: RowQuery) -> str:
        """EXPLAIN of `q` on the indexed table, as ids() runs it."""
        unpadded = replace(q, filter=And((q.filter, _NOT_PADDING)))
        stmt, params = table_rows.query_statement(self.indexed, unpadded)
        cur = self.aloop.run(self.index_conn.execute(sql.SQL("EXPLAIN ") + stmt, params))
        return "\n".join(str(row[0]) for row in self.aloop.run(cur.fetchall()))


_NOT_PADDING = Exists(("pad",), False)


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


@pytest.fixture
def table_service(channel: grpc.Channel) -> TableServiceStub:
    return TableServiceStub(channel)


def create_table(
    stub: TableServiceStub, project: Project, name: str, *indexed: str
) -> table_pb2.Table:
    request = table_pb2.CreateTableRequest(project_id=project.id, name=name, indexed_fields=indexed)
    return stub.CreateTable(request, metadata=project.auth).table


def batch(
    stub: TableServiceStub, project: Project, body: dict[str, Any]
) -> table_pb2.BatchQueryResponse:
    """BatchQuery with a request written as its JSON body (the seed's form)."""
    request = json_format.ParseDict(body, table_pb2.BatchQueryRequest())
    request.project_id = project.id
    return stub.BatchQuery(request, metadata=project.auth)


def insert_rows(
    stub: TableServiceStub, project: Project, table: str, rows: list[dict[str, Any]]
) -> list[str]:
    """Insert rows through BatchQuery (at most 1000); their ids."""
    reply = batch(stub, project, {"operations": [{"op": "insert", "table": table, "rows": rows}]})
    assert reply.succeeded == 1, reply
    return list(reply.results[0].row_ids)


def rows_of(result: table_pb2.OperationResult) -> list[dict[str, Any]]:
    """A result's rows as plain JSON (integral numbers as ints)."""
    return [struct_to_dict(row.row_data) for row in result.rows]
