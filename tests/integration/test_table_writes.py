"""Row writes on real PostgreSQL: insert, query pages (limit, has_more, skip, projection), count,
every update operator with matched vs modified, a row that does not fit an update failing the
whole operation cleanly, and delete by filter."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.plugins.tables import Loop
from zerodb_batch.domain.table_filter import MATCH_ALL, Filter, parse_filter
from zerodb_batch.domain.table_ops import RowQuery, SortKey
from zerodb_batch.domain.table_update import Update, read_update
from zerodb_batch.domain.validate import Checker
from zerodb_batch.errors import InvalidArgument
from zerodb_batch.storage import table_rows
from zerodb_batch.storage.tables import TableInfo


def where(flt: dict[str, Any]) -> Filter:
    return parse_filter(flt, "filters")


def change(update: dict[str, Any]) -> Update:
    c = Checker("")
    parsed = read_update(c, "operations[3].update", update)
    assert not c.violations
    return parsed


def fill(aloop: Loop, table: TableInfo, rows: list[dict[str, Any]]) -> list[str]:
    return aloop.run(table_rows.insert(aloop.conn, table, [json.dumps(r) for r in rows]))


def contents(aloop: Loop, table: TableInfo) -> dict[str, dict[str, Any]]:
    page = aloop.run(table_rows.query(aloop.conn, table, RowQuery(limit=1000)))
    return {row.row_id: row.row_data for row in page.rows}


def test_insert_then_query_pages(aloop: Loop) -> None:
    table = aloop.table("pages")
    ids = fill(aloop, table, [{"i": i, "a": {"b": i, "c": "x"}} for i in range(25)])
    assert len(set(ids)) == 25
    first = aloop.run(table_rows.query(aloop.conn, table, RowQuery(limit=10)))
    assert first.has_more and [r.row_id for r in first.rows] == sorted(ids)[:10]  # row_id order
    last = aloop.run(table_rows.query(aloop.conn, table, RowQuery(skip=20, limit=10)))
    assert not last.has_more and [r.row_id for r in last.rows] == sorted(ids)[20:]
    exact = aloop.run(table_rows.query(aloop.conn, table, RowQuery(skip=15, limit=10)))
    assert not exact.has_more and len(exact.rows) == 10
    sorted_desc = RowQuery(sort=(SortKey(("i",), True),), limit=3, projection=(("a", "b"),))
    page = aloop.run(table_rows.query(aloop.conn, table, sorted_desc))
    assert [r.row_data for r in page.rows] == [{"a": {"b": 24}}, {"a": {"b": 23}}, {"a": {"b": 22}}]
    assert aloop.run(table_rows.count(aloop.conn, table, where({"i": {"$gte": 20}}))) == 5


UPDATES: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    # (row before, update, row after)
    ({"a": 1}, {"$set": {"a": 2, "b.c.d": "x"}}, {"a": 2, "b": {"c": {"d": "x"}}}),
    ({"a": {"k": 1}}, {"$set": {"a.j": [1]}}, {"a": {"k": 1, "j": [1]}}),
    ({"a": {"7": 1}}, {"$set": {"a.7": 2}}, {"a": {"7": 2}}),  # digits are keys in updates
    ({"n": 1.5}, {"$inc": {"n": 2, "m": -1}}, {"n": 3.5, "m": -1}),
    ({"n": 0.1}, {"$inc": {"n": 0.2}}, {"n": 0.3}),  # exact decimal arithmetic
    ({"a": 1, "b": {"c": 1, "d": 2}}, {"$unset": {"a": "", "b.c": 1, "x.y": 1}}, {"b": {"d": 2}}),
    ({"t": ["a"]}, {"$push": {"t": ["b"], "u": 1}}, {"t": ["a", ["b"]], "u": [1]}),
    ({"t": [1, 1.0, "1", [1], 2]}, {"$pull": {"t": 1, "missing": 1}}, {"t": ["1", [1], 2]}),
    ({"t": [{"k": 1}, {"k": 2}]}, {"$pull": {"t": {"k": 1}}}, {"t": [{"k": 2}]}),
]


@pytest.mark.parametrize(("before", "update", "after"), UPDATES, ids=[str(u[1]) for u in UPDATES])
def test_update_operators(
    aloop: Loop, before: dict[str, Any], update: dict[str, Any], after: dict[str, Any]
) -> None:
    table = aloop.table("upd")
    (row_id,) = fill(aloop, table, [before])
    assert aloop.run(table_rows.update(aloop.conn, table, MATCH_ALL, change(update))) == (1, 1)
    assert contents(aloop, table) == {row_id: after}


def test_matched_but_not_modified_rows_are_not_written(aloop: Loop) -> None:
    table = aloop.table("same")
    fill(aloop, table, [{"s": "on", "n": 1}, {"s": "off", "n": 1}, {"s": "on", "n": 2}])
    before = aloop.run(table_rows.query(aloop.conn, table, RowQuery()))
    counts = aloop.run(
        table_rows.update(aloop.conn, table, where({"n": 1}), change({"$set": {"s": "on"}}))
    )
    assert counts == (2, 1)  # the row already "on" matched and stayed as it was
    after = {r.row_id: r for r in aloop.run(table_rows.query(aloop.conn, table, RowQuery())).rows}
    for row in before.rows:
        changed = after[row.row_id].update_time != row.update_time
        assert changed == (row.row_data == {"s": "off", "n": 1})
    assert aloop.run(
        table_rows.update(aloop.conn, table, where({"n": 3}), change({"$inc": {"n": 1}}))
    ) == (0, 0)


@pytest.mark.parametrize(
    ("update", "field", "reason"),
    [
        ({"$inc": {"n": 1}}, "operations[3].update.$inc.n", "NOT_A_NUMBER"),
        ({"$push": {"n": 1}}, "operations[3].update.$push.n", "NOT_AN_ARRAY"),
        ({"$pull": {"n": 1}}, "operations[3].update.$pull.n", "NOT_AN_ARRAY"),
        ({"$set": {"n.x": 1}}, "operations[3].update.$set.n.x", "PARENT_NOT_AN_OBJECT"),
        ({"$inc": {"k": 1}, "$set": {"z": 1}}, "operations[3].update.$inc.k", "NOT_A_NUMBER"),
    ],
)
def test_a_row_that_does_not_fit_fails_the_operation_and_changes_nothing(
    aloop: Loop, update: dict[str, Any], field: str, reason: str
) -> None:
    table = aloop.table("misfit")
    fill(aloop, table, [{"n": 1, "k": 0}, {"n": "one", "k": None}, {"n": 3, "k": 5}])
    before = contents(aloop, table)
    with pytest.raises(InvalidArgument) as caught:
        aloop.run(table_rows.update(aloop.conn, table, MATCH_ALL, change(update)))
    (violation,) = caught.value.violations
    assert (violation.field, violation.reason) == (field, reason)
    assert field in caught.value.message and "nothing was changed" in caught.value.message
    assert contents(aloop, table) == before


def test_a_failed_update_inside_a_batch_transaction_rolls_back_to_its_savepoint(
    aloop: Loop,
) -> None:
    table = aloop.table("atomic")

    async def batch() -> None:
        async with aloop.conn.transaction():
            await table_rows.insert(aloop.conn, table, ['{"n": "x"}'])
            with pytest.raises(InvalidArgument):
                async with aloop.conn.transaction():  # a savepoint per operation
                    await table_rows.update(
                        aloop.conn, table, MATCH_ALL, change({"$inc": {"n": 1}})
                    )
            await table_rows.insert(aloop.conn, table, ['{"n": 2}'])

    aloop.run(batch())
    assert sorted(map(str, contents(aloop, table).values())) == ["{'n': 'x'}", "{'n': 2}"]


def test_delete_by_filter_counts(aloop: Loop) -> None:
    table = aloop.table("del")
    fill(aloop, table, [{"n": i} for i in range(10)])
    assert aloop.run(table_rows.delete(aloop.conn, table, where({"n": {"$lt": 3}}))) == 3
    assert aloop.run(table_rows.delete(aloop.conn, table, where({"n": {"$lt": 3}}))) == 0
    assert aloop.run(table_rows.delete(aloop.conn, table, MATCH_ALL)) == 7
    assert contents(aloop, table) == {}
