"""The documented comparison rule, case by case, on a plain table and on an indexed one: each
filter with the rows it must match (by label), so the rule itself is pinned down, not only its
agreement with the reference evaluator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.plugins.tables import Loop, Pair, as_stored, through_struct
from zerodb_batch.domain.table_filter import parse_filter
from zerodb_batch.domain.table_ops import RowQuery, SortKey
from zerodb_batch.storage import table_rows

ROWS: dict[str, dict[str, Any]] = {
    "num5": {"n": 5, "tags": ["a", "b"], "s": "apple"},
    "num10": {"n": 10, "tags": ["b"], "s": "Banana"},
    "float": {"n": 1.0, "s": "é"},
    "str10": {"n": "10", "s": "a"},
    "null": {"n": None, "tags": [], "s": None},
    "bool": {"n": True, "tags": [1, [2], {"k": 1}]},
    "obj": {"n": {"x": 1, "y": [1, 2]}, "deep": {"a": {"b": 1}}},
    "arr": {"n": [5, 10], "tags": ["a"], "deep": {"a": {"b": "1"}}},
    "missing": {"other": 1},
}

CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"n": {"$gt": 5}}, {"num10"}),  # numbers only: never the string "10" or the array
    ({"n": {"$gte": 5}}, {"num5", "num10"}),
    ({"n": {"$lt": 5}}, {"float"}),
    ({"n": {"$gt": "1"}}, {"str10"}),  # strings only, by code point
    ({"s": {"$lt": "a"}}, {"num10"}),  # "Banana" < "a" < "apple" < "é" by code point
    ({"s": {"$gt": "apple"}}, {"float"}),
    ({"n": 1}, {"float"}),  # 1 equals 1.0
    ({"n": "10"}, {"str10"}),  # a string never equals a number
    ({"n": True}, {"bool"}),  # true is not 1
    ({"n": None}, {"null"}),  # null is not missing
    ({"n": {"$exists": False}}, {"missing"}),
    ({"n": {"$exists": True}}, set(ROWS) - {"missing"}),
    ({"n": {"y": [1, 2], "x": 1}}, {"obj"}),  # objects whole, key order irrelevant
    ({"n": {"x": 1}}, set()),  # not a sub-document match
    ({"n": [5, 10]}, {"arr"}),  # arrays whole and in order
    ({"n": [10, 5]}, set()),
    ({"n": 5}, {"num5"}),  # equality does not look into arrays...
    ({"tags": "a"}, set()),
    ({"tags": {"$contains": "a"}}, {"num5", "arr"}),  # ...$contains does
    ({"s": {"$contains": "an"}}, {"num10"}),  # substring of a string
    ({"tags": {"$contains": 1}}, {"bool"}),
    ({"tags": {"$contains": 2}}, set()),  # not inside nested arrays
    ({"n": {"$ne": 5}}, set(ROWS) - {"num5"}),  # negations include missing and other types
    ({"n": {"$nin": [5, "10"]}}, set(ROWS) - {"num5", "str10"}),
    ({"n": {"$in": [5, "10", None]}}, {"num5", "str10", "null"}),
    ({"n": {"$in": []}}, set()),
    ({"n": {"$not": {"$gt": 5}}}, set(ROWS) - {"num10"}),
    ({"deep.a.b": 1}, {"obj"}),  # dotted paths into objects
    ({"deep.a.b": {"$exists": True}}, {"obj", "arr"}),
    ({"tags.0": "a"}, {"num5", "arr"}),  # a digit part picks an array element
    ({"tags.1.0": 2}, {"bool"}),
    ({"s": {"$regex": "^[a-b]"}}, {"num5", "str10"}),
    ({"s": {"$regex": "^\\w+$"}}, {"num5", "num10", "str10"}),  # \w is ASCII: not "é"
    ({"$or": [{"n": 5}, {"n": "10"}]}, {"num5", "str10"}),
    ({"$and": [{"n": {"$gt": 1}}, {"n": {"$lt": 10}}]}, {"num5"}),
    ({"$not": {"n": {"$exists": True}}}, {"missing"}),
    ({}, set(ROWS)),
]


@pytest.fixture(scope="module")
def loaded(tables_url: str) -> Iterator[tuple[Pair, dict[str, str]]]:
    """Both tables hold ROWS; yields the pair and row id -> label (ids of both tables)."""
    aloop = Loop(tables_url)
    pair = Pair(aloop)
    labels: dict[str, str] = {}
    for table in (pair.plain, pair.indexed):
        texts = [as_stored(doc) for doc in ROWS.values()]
        ids = pair.aloop.run(table_rows.insert(pair.aloop.conn, table, texts))
        labels.update(zip(ids, ROWS, strict=True))
    yield pair, labels
    aloop.close()


@pytest.mark.parametrize(("flt", "expected"), CASES, ids=[str(c[0]) for c in CASES])
def test_comparison_rule(
    loaded: tuple[Pair, dict[str, str]], flt: dict[str, Any], expected: set[str]
) -> None:
    pair, labels = loaded
    query = RowQuery(filter=parse_filter(through_struct(flt), "filters"), limit=100)
    for table in (pair.plain, pair.indexed):
        assert {labels[i] for i in pair.ids(table, query)} == expected, table.name


INDEXABLE = [{"n": {"$gt": 5}}, {"n": {"$gt": "1"}}, {"n": 1}, {"s": {"$lt": "a"}},
             {"n": {"$in": [5, "10"]}}, {"$or": [{"n": 5}, {"s": "a"}]}]  # fmt: skip


@pytest.mark.parametrize("flt", INDEXABLE, ids=str)
def test_the_indexed_table_is_read_through_its_indexes(
    loaded: tuple[Pair, dict[str, str]], flt: dict[str, Any]
) -> None:
    pair, _ = loaded
    tree = parse_filter(through_struct(flt), "filters")
    assert f"table_rows_t{pair.indexed.table_id}_f" in pair.plan(RowQuery(filter=tree))


def test_sort_orders_types_then_values(loaded: tuple[Pair, dict[str, str]]) -> None:
    pair, labels = loaded
    query = RowQuery(sort=(SortKey(("n",), False),), limit=100)
    order = [labels[i] for i in pair.ids(pair.plain, query)]
    # missing and null first (tied, by row id), numbers, strings, objects, arrays, booleans
    assert order[:2] in (["null", "missing"], ["missing", "null"])
    assert order[2:] == ["float", "num5", "num10", "str10", "obj", "arr", "bool"]
    descending = RowQuery(sort=(SortKey(("n",), True),), limit=100)
    assert [labels[i] for i in pair.ids(pair.plain, descending)][:7] == order[2:][::-1]
