"""The indexes of indexed fields are used: EXPLAIN of the statements the storage runs, on a table
of 100,000 rows, shows the field's index for equality, range and $in filters on numbers and
strings, and the same filters count the same rows with index scans turned off; and no statement
is left prepared (a prepared statement may settle on a generic plan, which cannot use the
partial indexes)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from psycopg import sql

from tests.plugins.tables import Loop
from zerodb_batch.domain.table_filter import parse_filter
from zerodb_batch.domain.table_ops import RowQuery
from zerodb_batch.storage import table_rows
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.table_sql import index_name
from zerodb_batch.storage.tables import TableInfo

ROWS = 100_000
# Row i: status "s<i mod 1000>", n = i, score a number in meta, every 10th n a string.
_FILL = """
INSERT INTO table_rows (project_id, table_id, row_id, row_data)
SELECT %(project_id)s, %(table_id)s, gen_random_uuid(), jsonb_build_object(
    'status', 's' || (i %% 1000),
    'n', CASE WHEN i %% 10 = 0 THEN to_jsonb('x' || i) ELSE to_jsonb(i) END,
    'meta', jsonb_build_object('score', (i %% 5000) / 10.0))
FROM generate_series(1, %(rows)s) AS i
"""

INDEXED: list[tuple[dict[str, Any], int]] = [  # filter, field number of the index it must use
    ({"status": "s17"}, 0),
    ({"status": {"$gte": "s998"}}, 0),
    ({"status": {"$in": ["s1", "s2"]}}, 0),
    ({"n": 4242}, 1),
    ({"n": {"$gt": 99_990}}, 1),
    ({"n": {"$gte": 500, "$lt": 520}}, 1),
    ({"n": {"$in": [7, 8, "x20"]}}, 1),
    ({"n": {"$lt": "x1000"}}, 1),
    ({"meta.score": 1.5}, 2),
    ({"meta.score": {"$lte": 0.2}}, 2),
]


@pytest.fixture(scope="module")
def loaded(tables_url: str) -> Iterator[tuple[Loop, TableInfo]]:
    aloop = Loop(tables_url)
    table = aloop.table("indexed", "status", "n", "meta.score")
    params = {"project_id": aloop.project, "table_id": table.table_id, "rows": ROWS}
    aloop.run(aloop.conn.execute(_FILL, params))
    # What autovacuum does after the load (0005_tables.sql makes it follow loads closely).
    aloop.run(aloop.conn.execute("ANALYZE table_rows"))
    yield aloop, table
    aloop.close()


async def explain(conn: Conn, table: TableInfo, q: RowQuery) -> str:
    stmt, params = table_rows.query_statement(table, q)
    cur = await conn.execute(sql.SQL("EXPLAIN ") + stmt, params, prepare=False)
    return "\n".join(row[0] for row in await cur.fetchall())  # type: ignore[misc]


@pytest.mark.parametrize(("flt", "field"), INDEXED, ids=[str(c[0]) for c in INDEXED])
def test_indexed_filters_use_the_fields_index(
    loaded: tuple[Loop, TableInfo], flt: dict[str, Any], field: int
) -> None:
    aloop, table = loaded
    q = RowQuery(filter=parse_filter(flt, "filters"), limit=10)
    assert index_name(table.table_id, field) in aloop.run(explain(aloop.conn, table, q))
    with_index = aloop.run(table_rows.count(aloop.conn, table, q.filter))
    assert with_index > 0
    assert with_index == aloop.run(count_without_indexes(aloop, table, q))


async def count_without_indexes(aloop: Loop, table: TableInfo, q: RowQuery) -> int:
    async with aloop.conn.transaction():
        await aloop.conn.execute("SET LOCAL enable_indexscan = off")
        await aloop.conn.execute("SET LOCAL enable_bitmapscan = off")
        assert "table_rows_t" not in await explain(aloop.conn, table, q)
        return await table_rows.count(aloop.conn, table, q.filter)


def test_storage_leaves_no_prepared_statement(loaded: tuple[Loop, TableInfo]) -> None:
    aloop, indexed = loaded
    conn = aloop.connect()
    q = RowQuery(filter=parse_filter({"status": "s3"}, "filters"), limit=5)
    for _ in range(12):  # psycopg prepares a statement on its 5th run unless told not to
        aloop.run(table_rows.query(conn, indexed, q))
        aloop.run(table_rows.count(conn, indexed, q.filter))
    cur = aloop.run(conn.execute("SELECT statement FROM pg_prepared_statements"))
    assert aloop.run(cur.fetchall()) == []
    assert index_name(indexed.table_id, 0) in aloop.run(explain(aloop.conn, indexed, q))
