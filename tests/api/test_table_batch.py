"""BatchQuery through a real server and channel: the seed's body, per-operation results and
errors, limits, stop_on_error, atomic, and idempotent retries."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from tests.plugins.checks import assert_too_large, details
from tests.plugins.server import Project, ServerThread, server_settings
from tests.plugins.services import Backends
from tests.plugins.tables import batch, create_table, insert_rows, rows_of
from zerodb.v1 import table_pb2
from zerodb.v1.table_pb2_grpc import TableServiceStub

SEED = {
    "operations": [
        {"table": "agents", "filters": {"status": "active"}, "limit": 10},
        {"table": "sessions", "filters": {"user_id": "usr-123"}, "limit": 5},
    ],
    "parallel": True,
    "stop_on_error": False,
}
OK, FAILED = table_pb2.OPERATION_OUTCOME_SUCCEEDED, table_pb2.OPERATION_OUTCOME_FAILED
SKIPPED, ROLLED_BACK = table_pb2.OPERATION_OUTCOME_SKIPPED, table_pb2.OPERATION_OUTCOME_ROLLED_BACK


def outcomes(reply: table_pb2.BatchQueryResponse) -> list[int]:
    return [r.outcome for r in reply.results]


def violations(result: table_pb2.OperationResult) -> list[tuple[str, str]]:
    """(field, reason) of every field violation in an operation's error."""
    bad = error_details_pb2.BadRequest()
    for detail in result.error.details:
        if detail.Unpack(bad):
            return [(v.field, v.reason) for v in bad.field_violations]
    return []


def reason(result: table_pb2.OperationResult) -> str:
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in result.error.details)
    return info.reason


def count(stub: TableServiceStub, project: Project, table: str, **filters: Any) -> int:
    op = {"op": "count", "table": table, "filters": filters}
    return int(batch(stub, project, {"operations": [op]}).results[0].count)


@pytest.fixture
def agents(table_service: TableServiceStub, project: Project) -> str:
    create_table(table_service, project, "agents", "status")
    rows = [{"name": f"a{i}", "status": "active" if i < 12 else "idle", "age": 20 + i}
            for i in range(15)]  # fmt: skip
    insert_rows(table_service, project, "agents", rows)
    return "agents"


def test_the_seeds_body_answers_each_operation_in_order(
    table_service: TableServiceStub, project: Project, agents: str
) -> None:
    create_table(table_service, project, "sessions")
    sessions = [{"user_id": "usr-123", "n": i} for i in range(7)]
    insert_rows(table_service, project, "sessions", sessions)
    reply = batch(table_service, project, SEED)
    assert (reply.succeeded, reply.failed, reply.skipped) == (2, 0, 0)
    first, second = reply.results
    assert (first.index, first.table, first.op, second.index, second.table, second.op) == (
        0, "agents", "query", 1, "sessions", "query",
    )  # fmt: skip
    assert outcomes(reply) == [OK, OK] and not first.HasField("error")
    assert (len(first.rows), first.has_more, len(second.rows), second.has_more) == (10, 1, 5, 1)
    assert {row["status"] for row in rows_of(first)} == {"active"}
    assert [row["n"] for row in rows_of(second)] == [0, 1, 2, 3, 4]  # row_id order: as inserted
    assert all(r.execution_time_ms > 0 for r in reply.results)
    row = first.rows[0]
    assert row.row_id and row.create_time.seconds and row.update_time.seconds


def test_each_failure_is_its_operations_own_and_poisons_no_other(
    table_service: TableServiceStub, project: Project, agents: str
) -> None:
    reply = batch(
        table_service,
        project,
        {
            "operations": [
                {"table": agents, "filters": {"status": "active"}, "limit": 1},
                {"table": agents, "filters": {"age": {"$gt": True}}},
                {"table": agents, "filters": {"age": {"$near": 3}}, "limit": 2000},
                {"table": agents, "filters": {"name": {"$regex": "(?=a)"}}},
                {"table": "nope", "filters": {"status": "active"}},
                {"op": "upsert", "table": agents},
                {"op": "update", "table": agents, "filters": {"status": "idle"},
                 "update": {"$inc": {"status": 1}}},
                {"op": "update", "table": agents, "filters": {"status": "idle"},
                 "update": {"$set": {"seen": True}}},
                {"op": "count", "table": agents, "filters": {"seen": True}},
            ]
        },
    )  # fmt: skip
    assert outcomes(reply) == [OK, FAILED, FAILED, FAILED, FAILED, FAILED, FAILED, OK, OK]
    assert (reply.succeeded, reply.failed) == (3, 6)
    r = reply.results
    assert violations(r[1]) == [("operations[1].filters.age.$gt", "TYPE_MISMATCH")]
    assert [f for f, _ in violations(r[2])] == ["operations[2].filters.age.$near"]  # limit capped
    assert violations(r[3]) == [("operations[3].filters.name.$regex", "INVALID_REGEX")]
    assert (r[4].error.code, reason(r[4])) == (code_pb2.NOT_FOUND, "TABLE_NOT_FOUND")
    assert "operations[4].table" in r[4].error.message
    assert violations(r[5])[0][0] == "operations[5].op" and r[5].op == "upsert"
    assert violations(r[6]) == [("operations[6].update.$inc.status", "NOT_A_NUMBER")]
    assert {res.error.code for res in r[1:7]} - {code_pb2.NOT_FOUND} == {code_pb2.INVALID_ARGUMENT}
    assert (r[7].matched, r[7].modified, r[8].count) == (3, 3, 3)
    assert [res.execution_time_ms for res in r[1:6]] == [0.0] * 5  # failed before running
    assert r[6].execution_time_ms > 0  # it ran, then failed


def test_writes_run_in_order_and_each_sees_the_ones_before(
    table_service: TableServiceStub, project: Project, agents: str
) -> None:
    reply = batch(
        table_service,
        project,
        {
            "parallel": True,  # a batch with writes runs in order anyway
            "operations": [
                {"op": "insert", "table": agents, "rows": [{"name": "new", "age": 1}] * 2},
                {"op": "update", "table": agents, "filters": {"name": "new"},
                 "update": {"$inc": {"age": 1}, "$push": {"tags": "x"}}},
                {"table": agents, "filters": {"name": "new"}, "projection": ["age", "tags"]},
                {"op": "delete", "table": agents, "filters": {"age": {"$lt": 25}}},
                {"op": "delete", "table": agents, "filters": {}},
                {"op": "count", "table": agents},
            ],
        },
    )  # fmt: skip
    assert outcomes(reply) == [OK, OK, OK, OK, FAILED, OK]
    insert, update, query, delete, unfiltered, counted = reply.results
    assert (insert.inserted, len(set(insert.row_ids))) == (2, 2)
    assert (update.matched, update.modified) == (2, 2)
    assert rows_of(query) == [{"age": 2, "tags": ["x"]}] * 2
    assert [row.row_id for row in query.rows] == list(insert.row_ids)
    assert delete.deleted == 7  # the two new rows and a0..a4
    assert violations(unfiltered) == [("operations[4].filters", "EMPTY_FILTER")]
    assert counted.count == 10


def test_fifty_operations_run_and_fifty_one_or_none_fail_the_call(
    table_service: TableServiceStub, project: Project, agents: str
) -> None:
    op = {"table": agents, "filters": {"status": "idle"}, "limit": 1}
    reply = batch(table_service, project, {"operations": [op] * 50, "parallel": True})
    assert reply.succeeded == 50 and [r.index for r in reply.results] == list(range(50))
    with pytest.raises(grpc.RpcError) as caught:
        batch(table_service, project, {"operations": [op] * 51})
    assert_too_large(caught.value, "operations", 50, 51)
    for body, field in (
        ({"operations": []}, "operations"),
        ({"operations": [op], "atomic": True, "parallel": True}, "atomic"),
        ({"operations": [op], "request_id": "r" * 129}, "request_id"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            batch(table_service, project, body)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert details(caught.value)[1].field_violations[0].field == field


def test_a_query_returns_at_most_1000_rows_and_says_more_match(
    table_service: TableServiceStub, project: Project
) -> None:
    create_table(table_service, project, "big")
    rows = [{"i": i} for i in range(1000)]
    insert_rows(table_service, project, "big", rows)
    insert_rows(table_service, project, "big", [{"i": 1000}])

    def page(**op: Any) -> table_pb2.OperationResult:
        return batch(table_service, project, {"operations": [{"table": "big", **op}]}).results[0]

    capped = page(limit=5000)
    assert (len(capped.rows), capped.has_more) == (1000, True)
    assert (len(page().rows), page().has_more) == (100, True)  # the default limit
    rest = page(skip=1000, limit=1000)
    assert (rows_of(rest), rest.has_more) == ([{"i": 1000}], False)
    exact = page(filters={"i": {"$lt": 10}}, sort_by=[{"field": "i", "direction": -1}], limit=10)
    assert ([r["i"] for r in rows_of(exact)], exact.has_more) == (list(range(9, -1, -1)), False)


def test_stop_on_error_skips_what_comes_after_the_first_failure(
    table_service: TableServiceStub, project: Project, agents: str
) -> None:
    ops = [
        {"op": "insert", "table": agents, "rows": [{"name": "kept"}]},
        {"op": "insert", "table": "missing", "rows": [{"name": "x"}]},
        {"op": "insert", "table": agents, "rows": [{"name": "later"}]},
    ]
    stopped = batch(table_service, project, {"operations": ops, "stop_on_error": True})
    assert outcomes(stopped) == [OK, FAILED, SKIPPED]
    assert (stopped.skipped, stopped.results[2].execution_time_ms) == (1, 0.0)
    assert (count(table_service, project, agents, name="kept"),
            count(table_service, project, agents, name="later")) == (1, 0)  # fmt: skip
    going_on = batch(table_service, project, {"operations": ops})
    assert outcomes(going_on) == [OK, FAILED, OK]


@pytest.mark.parametrize("parallel", [False, True])
def test_stop_on_error_in_a_read_batch_is_the_same_in_parallel(
    table_service: TableServiceStub, project: Project, agents: str, parallel: bool
) -> None:
    good = {"table": agents, "filters": {"status": "active"}, "limit": 3}
    bad = {"table": agents, "filters": {"status": {"$bad": 1}}}
    body = {"operations": [good, good, bad, good, good], "stop_on_error": True}
    reply = batch(table_service, project, {**body, "parallel": parallel})
    assert outcomes(reply) == [OK, OK, FAILED, SKIPPED, SKIPPED]
    assert [len(r.rows) for r in reply.results] == [3, 3, 0, 0, 0]


def test_atomic_rolls_every_operation_back_on_the_first_failure(
    table_service: TableServiceStub, project: Project, agents: str
) -> None:
    for failing in (
        {"op": "insert", "table": "missing", "rows": [{"x": 1}]},
        {"op": "update", "table": agents, "filters": {"name": "a0"},
         "update": {"$push": {"name": "x"}}},
    ):  # fmt: skip
        reply = batch(
            table_service,
            project,
            {
                "atomic": True,
                "operations": [
                    {"op": "insert", "table": agents, "rows": [{"name": "gone"}]},
                    {"op": "update", "table": agents, "filters": {"status": "idle"},
                     "update": {"$set": {"status": "gone"}}},
                    {"table": agents, "filters": {"status": "gone"}},
                    failing,
                    {"op": "delete", "table": agents, "all_rows": True},
                ],
            },
        )  # fmt: skip
        assert outcomes(reply) == [ROLLED_BACK] * 3 + [FAILED, SKIPPED]
        assert (reply.rolled_back, reply.failed, reply.skipped, reply.succeeded) == (3, 1, 1, 0)
        assert not any(r.rows or r.inserted or r.matched or r.row_ids for r in reply.results)
        assert count(table_service, project, agents) == 15
        assert count(table_service, project, agents, status="gone") == 0
    done = batch(
        table_service,
        project,
        {"atomic": True, "operations": [{"op": "insert", "table": agents, "rows": [{}]}] * 2},
    )
    assert outcomes(done) == [OK, OK] and count(table_service, project, agents) == 17


def test_an_atomic_batch_of_reads_withholds_every_answer_on_a_failure(
    table_service: TableServiceStub, project: Project, agents: str
) -> None:
    good = {"op": "count", "table": agents}
    reply = batch(
        table_service, project, {"atomic": True, "operations": [good, {"table": "x"}, good]}
    )
    assert outcomes(reply) == [ROLLED_BACK, FAILED, SKIPPED]
    assert not reply.results[0].count


def test_a_retry_with_the_same_request_id_answers_the_first_response(
    table_service: TableServiceStub, project: Project, agents: str
) -> None:
    body = {"request_id": "r-1", "operations": [
        {"op": "insert", "table": agents, "rows": [{"name": "once"}] * 3},
        {"op": "count", "table": agents, "filters": {"name": "once"}},
    ]}  # fmt: skip
    first = batch(table_service, project, body)
    again = batch(table_service, project, body)
    assert again == first and first.results[1].count == 3
    assert count(table_service, project, agents, name="once") == 3
    changed = {**body, "operations": body["operations"][:1]}
    with pytest.raises(grpc.RpcError) as caught:
        batch(table_service, project, changed)
    assert details(caught.value)[0].reason == "REQUEST_ID_REUSED"

    failed = {"request_id": "r-2", "atomic": True, "operations": [
        {"op": "insert", "table": agents, "rows": [{"name": "never"}]},
        {"op": "insert", "table": "missing", "rows": [{}]},
    ]}  # fmt: skip
    assert batch(table_service, project, failed) == batch(table_service, project, failed)
    assert count(table_service, project, agents, name="never") == 0


def test_a_read_only_batch_runs_again_whatever_its_request_id(
    table_service: TableServiceStub, project: Project, agents: str
) -> None:
    body = {"request_id": "read-1", "operations": [{"op": "count", "table": agents}]}
    assert batch(table_service, project, body).results[0].count == 15
    insert_rows(table_service, project, agents, [{}])
    assert batch(table_service, project, body).results[0].count == 16


def test_an_answer_too_large_for_a_message_is_refused_and_writes_nothing(
    database_url: str, backends: Backends
) -> None:
    small = server_settings(database_url, backends.redis_url, max_message_bytes=256 * 1024)
    running = ServerThread(small)
    try:
        project = Project(*running.new_key())
        with grpc.insecure_channel(running.address) as channel:
            stub = TableServiceStub(channel)
            create_table(stub, project, "big")
            insert_rows(stub, project, "big", [{"blob": "x" * 5000}] * 40)
            too_much = {"table": "big", "limit": 1000}  # 40 rows of 5 KB, 80 after the insert
            for ops in (
                [too_much, too_much],
                [{"op": "insert", "table": "big", "rows": [{}]}, too_much] * 2,
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    batch(stub, project, {"operations": ops})
                assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                info, _ = details(caught.value)
                assert (info.reason, info.metadata["max"]) == (
                    "RESPONSE_TOO_LARGE",
                    str(256 * 1024),
                )
            assert count(stub, project, "big") == 40  # the inserts were rolled back
            fewer = {"table": "big", "limit": 1000, "projection": ["none"]}
            assert len(batch(stub, project, {"operations": [fewer] * 2}).results[1].rows) == 40
    finally:
        running.close()
