"""Injection attempts reach PostgreSQL as data. The domain refuses such table names, field paths
and operators (tests/unit); here the storage gets them anyway, unchecked, and they still are only
names, keys and values: no statement but ours runs, and nothing else is touched."""

from __future__ import annotations

import json

from tests.plugins.tables import Loop
from zerodb_batch.domain.table_filter import Compare, Regex, parse_filter
from zerodb_batch.domain.table_ops import RowQuery, TableSpec
from zerodb_batch.storage import table_rows, tables

EVIL = 'x"; DROP TABLE memories;--'
QUOTES = "a'b\"c); DROP TABLE table_rows; --"


def catalog_intact(aloop: Loop) -> bool:
    query = "SELECT to_regclass('memories') IS NOT NULL AND to_regclass('table_rows') IS NOT NULL"
    return bool(aloop.run(aloop.run(aloop.conn.execute(query)).fetchone())[0])  # type: ignore[index]


def test_a_hostile_table_name_is_only_a_name(aloop: Loop) -> None:
    spec = TableSpec(EVIL, "'); DELETE FROM tables; --", ((QUOTES,),))
    info = aloop.run(tables.create(aloop.conn, aloop.project, spec))  # an index on that key too
    assert info.name == EVIL
    assert list(aloop.run(tables.resolve(aloop.conn, aloop.project, [EVIL, "x"]))) == [EVIL]
    aloop.run(table_rows.insert(aloop.conn, info, [json.dumps({QUOTES: 1})]))
    assert aloop.run(tables.delete(aloop.conn, aloop.project, EVIL)) == 1
    assert catalog_intact(aloop)


def test_hostile_paths_and_values_are_data(aloop: Loop) -> None:
    table = aloop.table("data")
    row = {QUOTES: "'; DROP TABLE memories; --", "n": {"$gt": 1}}
    aloop.run(table_rows.insert(aloop.conn, table, [json.dumps(row), '{"other": 1}']))
    hostile = [
        Compare((QUOTES,), "eq", "'; DROP TABLE memories; --"),
        Compare((QUOTES,), "gte", "'"),
        Regex((QUOTES,), "DROP.*--"),
        parse_filter({"n": {"$eq": {"$gt": 1}}}, "filters"),  # an operator-looking value
    ]
    for tree in hostile:
        page = aloop.run(table_rows.query(aloop.conn, table, RowQuery(filter=tree)))
        assert [r.row_data for r in page.rows] == [row], tree
    assert catalog_intact(aloop)
