"""The filter parser: the tree it builds, and a violation with the exact path for every problem."""

from __future__ import annotations

from typing import Any

import pytest

from zerodb_batch.domain.table_fields import project
from zerodb_batch.domain.table_filter import (
    MATCH_ALL,
    And,
    Compare,
    Contains,
    Exists,
    In,
    Not,
    Or,
    Regex,
    parse_filter,
)
from zerodb_batch.errors import InvalidArgument

P = "operations[2].filters"
EVIL = 'x"; DROP TABLE memories;--'


def violations(flt: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as caught:
        parse_filter(flt, P)
    return [(v.field, v.reason) for v in caught.value.violations]


def test_bare_values_and_operators_become_a_tree() -> None:
    tree = parse_filter(
        {"status": "active", "age": {"$gte": 18, "$lt": 65}, "tags": {"$nin": ["x"]}}, P
    )
    assert tree == And((
        Compare(("status",), "eq", "active"),
        And((Compare(("age",), "gte", 18), Compare(("age",), "lt", 65))),
        Not(In(("tags",), ("x",))),
    ))  # fmt: skip


def test_every_operator() -> None:
    flt = {
        "a.b": {"$eq": {"x": [1]}},
        "c": {"$ne": None},
        "d": {"$in": [1, "1", None]},
        "e": {"$contains": "x"},
        "f": {"$regex": "^a.*b$"},
        "g": {"$exists": False},
        "h": {"$not": {"$gt": 1}},
        "$or": [{"i": 1}, {"j": {"$lte": "z"}}],
        "$and": [{"k": True}],
        "$not": {"l": 0},
    }
    assert parse_filter(flt, P) == And((
        Compare(("a", "b"), "eq", {"x": [1]}),
        Not(Compare(("c",), "eq", None)),
        In(("d",), (1, "1", None)),
        Contains(("e",), "x"),
        Regex(("f",), "^a.*b$"),
        Exists(("g",), False),
        Not(Compare(("h",), "gt", 1)),
        Or((Compare(("i",), "eq", 1), Compare(("j",), "lte", "z"))),
        And((Compare(("k",), "eq", True),)),
        Not(Compare(("l",), "eq", 0)),
    ))  # fmt: skip


def test_empty_filter_matches_everything_and_objects_compare_whole() -> None:
    assert parse_filter({}, P) == MATCH_ALL
    assert parse_filter({"meta": {}}, P) == Compare(("meta",), "eq", {})
    assert parse_filter({"meta": {"k": 1}}, P) == Compare(("meta",), "eq", {"k": 1})


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"age": {"$gtt": 5}}, [(f"{P}.age.$gtt", "UNKNOWN_OPERATOR")]),
        ({"$where": "1"}, [(f"{P}.$where", "UNKNOWN_OPERATOR")]),
        ({"age": {"$gt": True}}, [(f"{P}.age.$gt", "TYPE_MISMATCH")]),
        ({"age": {"$gt": None}}, [(f"{P}.age.$gt", "TYPE_MISMATCH")]),
        ({"age": {"$lt": [1]}}, [(f"{P}.age.$lt", "TYPE_MISMATCH")]),
        ({"age": {"$in": 5}}, [(f"{P}.age.$in", "TYPE_MISMATCH")]),
        ({"age": {"$nin": "abc"}}, [(f"{P}.age.$nin", "TYPE_MISMATCH")]),
        ({"age": {"$exists": 1}}, [(f"{P}.age.$exists", "TYPE_MISMATCH")]),
        ({"age": {"$contains": [1]}}, [(f"{P}.age.$contains", "TYPE_MISMATCH")]),
        ({"age": {"$regex": 5}}, [(f"{P}.age.$regex", "TYPE_MISMATCH")]),
        ({"age": {"$regex": "a(b"}}, [(f"{P}.age.$regex", "INVALID_REGEX")]),
        ({"age": {"$regex": "(?=a)"}}, [(f"{P}.age.$regex", "INVALID_REGEX")]),
        ({"age": {"$not": 5}}, [(f"{P}.age.$not", "INVALID_FILTER")]),
        ({"age": {"$not": {"x": 1}}}, [(f"{P}.age.$not", "INVALID_FILTER")]),
        ({"age": {"$gt": 1, "x": 2}}, [(f"{P}.age", "INVALID_FILTER")]),
        ({"$or": []}, [(f"{P}.$or", "INVALID_FILTER")]),
        ({"$and": {"a": 1}}, [(f"{P}.$and", "INVALID_FILTER")]),
        ({"$or": [{"a": {"$bad": 1}}]}, [(f"{P}.$or[0].a.$bad", "UNKNOWN_OPERATOR")]),
        ({"$not": 3}, [(f"{P}.$not", "INVALID_FILTER")]),
        ({EVIL: 1}, [(f"{P}.{EVIL}", "INVALID_FIELD_PATH")]),
        ({"a..b": 1}, [(f"{P}.a..b", "INVALID_FIELD_PATH")]),
        ({"a.": 1}, [(f"{P}.a.", "INVALID_FIELD_PATH")]),
        ({"": 1}, [(f"{P}.", "INVALID_FIELD_PATH")]),
        ({"é": 1}, [(f"{P}.é", "INVALID_FIELD_PATH")]),
        ({"a-b": 1}, [(f"{P}.a-b", "INVALID_FIELD_PATH")]),
        ({"a" * 257: 1}, [(f"{P}.{'a' * 257}", "TOO_LONG")]),
        ({".".join("a" * 17): 1}, [(f"{P}.{'.'.join('a' * 17)}", "TOO_DEEP")]),
        ({"a": "x\x00"}, [(f"{P}.a", "INVALID_VALUE")]),
        ({"a": {"$eq": [float("nan")]}}, [(f"{P}.a.$eq", "INVALID_VALUE")]),
        ({"a": {"$in": list(range(1001))}}, [(f"{P}.a.$in", "TOO_MANY")]),
        ([1], [(P, "INVALID_FILTER")]),
    ],
)  # fmt: skip
def test_violations_name_the_exact_path(flt: Any, expected: list[tuple[str, str]]) -> None:
    assert violations(flt) == expected


def test_every_violation_is_reported_at_once() -> None:
    found = violations({"a": {"$gt": True, "$foo": 1}, "b..c": 1, "$or": [{"d": {"$in": 1}}]})
    assert found == [
        (f"{P}.a.$gt", "TYPE_MISMATCH"),
        (f"{P}.a.$foo", "UNKNOWN_OPERATOR"),
        (f"{P}.b..c", "INVALID_FIELD_PATH"),
        (f"{P}.$or[0].d.$in", "TYPE_MISMATCH"),
    ]


def test_depth_and_size_are_bounded() -> None:
    deep: dict[str, Any] = {"a": 1}
    for _ in range(9):
        deep = {"$not": deep}
    assert violations(deep)[0][1] == "TOO_DEEP"
    nested: dict[str, Any] = {"a": 1}
    for _ in range(8):
        nested = {"$not": nested}
    parse_filter(nested, P)  # 8 levels are fine
    wide = {"$or": [{f"f{i}": i} for i in range(257)]}
    assert violations(wide) == [(P, "TOO_MANY")]


def test_projection_keeps_named_fields_nested() -> None:
    row = {"a": {"b": 1, "c": 2}, "d": [1, 2], "e": None}
    assert project(row, [("a", "b"), ("e",), ("x",), ("d", "0")]) == {"a": {"b": 1}, "e": None}
    assert project(row, [("a", "b"), ("a",)]) == {"a": {"b": 1, "c": 2}}
    assert project(row, [("a", "c"), ("a", "b")]) == {"a": {"c": 2, "b": 1}}
    assert row == {"a": {"b": 1, "c": 2}, "d": [1, 2], "e": None}  # untouched
