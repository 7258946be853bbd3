"""BatchQuery operations and CreateTable requests parsed into typed operations: defaults, limits,
fields that do not belong to an operation, update operators, and the seed's body unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format

from zerodb.v1 import table_pb2
from zerodb_batch import limits
from zerodb_batch.domain.table_filter import MATCH_ALL, Compare
from zerodb_batch.domain.table_ops import (
    CountOp,
    DeleteOp,
    InsertOp,
    QueryOp,
    RowQuery,
    SortKey,
    UpdateOp,
    parse_create,
    parse_operation,
)
from zerodb_batch.domain.table_update import Update, UpdateItem
from zerodb_batch.errors import InvalidArgument

SEED = (
    '{"operations":[{"table":"agents","filters":{"status":"active"},"limit":10},'
    '{"table":"sessions","filters":{"user_id":"usr-123"},"limit":5}],'
    '"parallel":true,"stop_on_error":false}'
)


def operation(**fields: Any) -> table_pb2.TableOperation:
    return json_format.ParseDict(fields, table_pb2.TableOperation())


def violations(**fields: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as caught:
        parse_operation(operation(**fields), "operations[2]")
    return [(v.field, v.reason) for v in caught.value.violations]


def test_the_seed_body_parses_unchanged() -> None:
    request = json_format.Parse(SEED, table_pb2.BatchQueryRequest())
    ops = [parse_operation(op, f"operations[{i}]") for i, op in enumerate(request.operations)]
    assert ops == [
        QueryOp("agents", RowQuery(Compare(("status",), "eq", "active"), limit=10)),
        QueryOp("sessions", RowQuery(Compare(("user_id",), "eq", "usr-123"), limit=5)),
    ]
    assert request.parallel and not request.stop_on_error


def test_query_defaults_and_caps() -> None:
    assert parse_operation(operation(table="t"), "op") == QueryOp("t", RowQuery())
    capped = parse_operation(operation(table="t", limit=5000), "op")
    assert isinstance(capped, QueryOp) and capped.query.limit == limits.MAX_QUERY_LIMIT
    sort_by = [{"field": "a.b", "direction": -1}, {"field": "c"}]
    full = parse_operation(
        operation(table="t", op="query", sort_by=sort_by, skip=3, projection=["a", "c.d"]), "op"
    )
    assert full == QueryOp("t", RowQuery(
        sort=(SortKey(("a", "b"), True), SortKey(("c",), False)), skip=3,
        projection=(("a",), ("c", "d"))))  # fmt: skip
    one = parse_operation(operation(table="t", sort={"age": -1}), "op")
    assert isinstance(one, QueryOp) and one.query.sort == (SortKey(("age",), True),)


def test_other_kinds() -> None:
    assert parse_operation(operation(table="t", op="count"), "op") == CountOp("t", MATCH_ALL)
    inserted = parse_operation(operation(table="t", op="insert", rows=[{"a": 1.0}, {}]), "op")
    assert inserted == InsertOp("t", ('{"a":1}', "{}"))
    updated = parse_operation(
        operation(table="t", op="update", filters={"a": 1}, update={"$inc": {"n": 2}}), "op"
    )
    item = UpdateItem("inc", ("n",), 2, "op.update.$inc.n")
    assert updated == UpdateOp("t", Compare(("a",), "eq", 1), Update((item,)))
    everything = parse_operation(operation(table="t", op="delete", all_rows=True), "op")
    assert everything == DeleteOp("t", MATCH_ALL)


OP = "operations[2]"
UPD = {"op": "update", "all_rows": True}  # an update of every row: only `update` left to vary


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"op": "upsert"}, [(f"{OP}.op", "INVALID_VALUE")]),
        ({"table": ""}, [(f"{OP}.table", "REQUIRED")]),
        ({"table": 'x"; DROP TABLE memories;--'}, [(f"{OP}.table", "INVALID_TABLE_NAME")]),
        ({"table": "1abc"}, [(f"{OP}.table", "INVALID_TABLE_NAME")]),
        ({"table": "a" * 129}, [(f"{OP}.table", "INVALID_TABLE_NAME")]),
        ({"rows": [{}]}, [(f"{OP}.rows", "UNKNOWN_FIELD")]),
        ({"op": "count", "limit": 3}, [(f"{OP}.limit", "UNKNOWN_FIELD")]),
        ({"op": "insert"}, [(f"{OP}.rows", "EMPTY_BATCH")]),
        ({"op": "insert", "rows": [{}] * 1001}, [(f"{OP}.rows", "BATCH_TOO_LARGE")]),
        ({"op": "insert", "rows": [{"a": "\x00"}]}, [(f"{OP}.rows[0]", "INVALID_CHARACTER")]),
        ({"skip": -1, "limit": -1},
         [(f"{OP}.skip", "OUT_OF_RANGE"), (f"{OP}.limit", "OUT_OF_RANGE")]),
        ({"sort": {"a": 1}, "sort_by": [{"field": "b"}]}, [(f"{OP}.sort", "INVALID_SORT")]),
        ({"sort": {"a": 1, "b": 1}}, [(f"{OP}.sort", "INVALID_SORT")]),
        ({"sort": {"a": 2}}, [(f"{OP}.sort.a", "INVALID_SORT")]),
        ({"sort_by": [{"field": "a"}, {"field": "a", "direction": -1}]},
         [(f"{OP}.sort_by", "DUPLICATE_FIELD")]),
        ({"sort_by": [{"field": "a", "direction": 5}]},
         [(f"{OP}.sort_by[0].direction", "INVALID_SORT")]),
        ({"sort_by": [{"field": "a'b"}]}, [(f"{OP}.sort_by[0].field", "INVALID_FIELD_PATH")]),
        ({"projection": ["a", "a"]}, [(f"{OP}.projection[1]", "DUPLICATE_FIELD")]),
        ({"op": "delete"}, [(f"{OP}.filters", "EMPTY_FILTER")]),
        ({"op": "delete", "filters": {}}, [(f"{OP}.filters", "EMPTY_FILTER")]),
        ({"op": "delete", "filters": {"a": 1}, "all_rows": True},
         [(f"{OP}.all_rows", "INVALID_VALUE")]),
        ({"op": "update", "update": {"$set": {"a": 1}}}, [(f"{OP}.filters", "EMPTY_FILTER")]),
        ({**UPD}, [(f"{OP}.update", "EMPTY_UPDATE")]),
        ({**UPD, "update": {"$rename": {"a": "b"}}},
         [(f"{OP}.update.$rename", "UNKNOWN_OPERATOR")]),
        ({**UPD, "update": {"$inc": {"n": "1"}}}, [(f"{OP}.update.$inc.n", "TYPE_MISMATCH")]),
        ({**UPD, "update": {"$inc": {"n": True}}}, [(f"{OP}.update.$inc.n", "TYPE_MISMATCH")]),
        ({**UPD, "update": {"$set": {}}}, [(f"{OP}.update.$set", "INVALID_UPDATE")]),
        ({**UPD, "update": {"$set": {"a b": 1}}},
         [(f"{OP}.update.$set.a b", "INVALID_FIELD_PATH")]),
        ({**UPD, "update": {"$set": {"a": 1}, "$unset": {"a": ""}}},
         [(f"{OP}.update.$unset.a", "CONFLICTING_UPDATE")]),
        ({**UPD, "update": {"$set": {"a.b": 1, "a": {}}}},
         [(f"{OP}.update.$set.a.b", "CONFLICTING_UPDATE")]),
        ({"op": "update", "filters": {"a": {"$bad": 1}}, "update": {"$set": {"a": 1}}},
         [(f"{OP}.filters.a.$bad", "UNKNOWN_OPERATOR")]),
    ],
)  # fmt: skip
def test_violations(fields: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert violations(**{"table": "t", **fields}) == expected


def test_update_items_come_in_a_fixed_order() -> None:
    op = parse_operation(operation(table="t", op="update", all_rows=True, update={
        "$push": {"z": 1}, "$set": {"b": 1, "a": 2}, "$unset": {"u": ""}}), "op")  # fmt: skip
    assert isinstance(op, UpdateOp)
    assert [(i.kind, i.path, i.value) for i in op.update.items] == [
        ("set", ("a",), 2), ("set", ("b",), 1), ("unset", ("u",), None), ("push", ("z",), 1)
    ]  # fmt: skip


def test_create_table_request() -> None:
    request = table_pb2.CreateTableRequest(name="agents", indexed_fields=["status", "meta.score"])
    spec = parse_create(request)
    assert spec.indexed_fields == (("status",), ("meta", "score"))
    with pytest.raises(InvalidArgument) as caught:
        parse_create(table_pb2.CreateTableRequest(
            name="x y", description="d" * 1025, indexed_fields=["a", *"bcdefghi"]))  # fmt: skip
    assert [(v.field, v.reason) for v in caught.value.violations] == [
        ("name", "INVALID_TABLE_NAME"), ("description", "TOO_LONG"), ("indexed_fields", "TOO_MANY")
    ]  # fmt: skip
    with pytest.raises(InvalidArgument) as caught:
        parse_create(table_pb2.CreateTableRequest(name="t", indexed_fields=["a", "a", "b."]))
    assert [(v.field, v.reason) for v in caught.value.violations] == [
        ("indexed_fields[1]", "DUPLICATE_FIELD"), ("indexed_fields[2]", "INVALID_FIELD_PATH")
    ]  # fmt: skip
