"""A BatchQuery's plan: what fails the call, what fails one operation; the concurrency setting."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from zerodb.v1 import table_pb2
from zerodb_batch.config import SettingError, Settings
from zerodb_batch.domain.table_batch import missing_tables, plan, read_only, tables_named
from zerodb_batch.domain.table_ops import CountOp, InsertOp, QueryOp
from zerodb_batch.errors import BatchTooLarge, InvalidArgument


def request(body: dict[str, object]) -> table_pb2.BatchQueryRequest:
    return json_format.ParseDict(body, table_pb2.BatchQueryRequest())


def test_each_operation_is_parsed_or_carries_its_own_error() -> None:
    planned = plan(request({"operations": [
        {"table": "a", "filters": {"n": {"$gt": 1}}},
        {"op": "count", "table": "b"},
        {"op": "insert", "table": "a", "rows": [{}], "limit": 3},
        {"op": "", "table": "1bad", "filters": {"$where": "x"}},
    ]}))  # fmt: skip
    assert [type(p.operation) for p in planned[:2]] == [QueryOp, CountOp]
    assert [p.kind for p in planned] == ["query", "count", "insert", "query"]
    assert planned[2].operation is None and planned[2].error is not None
    assert [v.field for v in planned[2].error.violations] == ["operations[2].limit"]
    assert planned[3].error is not None
    assert {v.field for v in planned[3].error.violations} == {
        "operations[3].table", "operations[3].filters.$where",
    }  # fmt: skip
    assert read_only(planned)  # the insert is malformed: it will not run
    assert tables_named(planned) == ["a", "b"]


def test_an_unknown_table_becomes_the_operations_not_found() -> None:
    planned = plan(request({"operations": [
        {"op": "insert", "table": "a", "rows": [{}]}, {"table": "gone"}, {"table": "zz z"},
    ]}))  # fmt: skip
    assert not read_only(planned)
    checked = missing_tables(planned, ["a"])
    assert isinstance(checked[0].operation, InsertOp)
    assert checked[1].error is not None and checked[1].error.reason == "TABLE_NOT_FOUND"
    assert checked[1].error.metadata == {"table": "gone", "field": "operations[1].table"}
    assert checked[2].error is planned[2].error  # malformed first: not looked up


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        ({"operations": [{"table": "a"}] * 51}, BatchTooLarge, "operations"),
        ({"operations": []}, InvalidArgument, "operations"),
        ({"operations": [{"table": "a"}], "atomic": True, "parallel": True}, InvalidArgument,
         "atomic"),
        ({"operations": [{"table": "a"}], "request_id": "x" * 129}, InvalidArgument, "request_id"),
    ],
)  # fmt: skip
def test_what_fails_the_whole_call(
    body: dict[str, object], error: type[InvalidArgument], field: str
) -> None:
    with pytest.raises(error) as caught:
        plan(request(body))
    assert caught.value.violations[0].field == field


@pytest.mark.parametrize("concurrency", ["10", "11"])
def test_query_concurrency_must_leave_the_snapshot_a_connection(concurrency: str) -> None:
    env = {"ZERODB_DB_POOL_MAX": "10", "ZERODB_QUERY_CONCURRENCY": concurrency}
    with pytest.raises(SettingError, match="ZERODB_QUERY_CONCURRENCY"):
        Settings.from_env(env)
    assert Settings.from_env({"ZERODB_QUERY_CONCURRENCY": "9"}).query_concurrency == 9
    assert Settings.from_env({"ZERODB_DB_POOL_MAX": "3"}).query_concurrency == 2
