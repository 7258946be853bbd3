"""Read-only batches on one snapshot: parallel and sequential answer alike, also while another
client writes, and parallel batches sharing the pool all finish."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from tests.plugins.server import Project, ServerThread
from tests.plugins.tables import batch, create_table, insert_rows
from zerodb.v1 import table_pb2
from zerodb.v1.table_pb2_grpc import TableServiceStub

READS: list[dict[str, Any]] = [
    {"table": "events", "filters": {"kind": "click"}, "sort_by": [{"field": "n", "direction": -1}],
     "limit": 7},
    {"op": "count", "table": "events", "filters": {"n": {"$gte": 100}}},
    {"table": "events", "filters": {"$or": [{"n": {"$lt": 3}}, {"tags": {"$contains": "b"}}]},
     "projection": ["n"], "skip": 2, "limit": 20},
    {"table": "nope"},
    {"op": "count", "table": "events"},
    {"table": "events", "sort": {"kind": 1}, "limit": 1000},
]  # fmt: skip


def without_times(reply: table_pb2.BatchQueryResponse) -> table_pb2.BatchQueryResponse:
    copy = table_pb2.BatchQueryResponse()
    copy.CopyFrom(reply)
    for result in copy.results:
        result.execution_time_ms = 0
    return copy


@pytest.fixture
def events(table_service: TableServiceStub, project: Project) -> str:
    create_table(table_service, project, "events", "kind", "n")
    rows = [{"kind": ["click", "view", "buy"][i % 3], "n": i, "tags": ["a", "b"][: i % 3]}
            for i in range(300)]  # fmt: skip
    insert_rows(table_service, project, "events", rows)
    return "events"


def test_parallel_and_sequential_answer_the_same(
    table_service: TableServiceStub, project: Project, events: str
) -> None:
    ops = READS * 8  # 48 operations
    sequential = batch(table_service, project, {"operations": ops})
    parallel = batch(table_service, project, {"operations": ops, "parallel": True})
    assert without_times(parallel) == without_times(sequential)
    assert (sequential.succeeded, sequential.failed) == (40, 8)


@pytest.fixture
def writer(server: ServerThread, project: Project, events: str) -> Iterator[threading.Event]:
    """Another client inserting rows into the table, one call after another, until the test
    ends; the event is set once it has committed its first row."""
    stop, started = threading.Event(), threading.Event()

    def write() -> None:
        with grpc.insecure_channel(server.address) as channel:
            stub = TableServiceStub(channel)
            while not stop.is_set():
                insert_rows(stub, project, events, [{"kind": "click", "n": 1000}])
                started.set()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    yield started
    stop.set()
    thread.join(30)


@pytest.mark.parametrize("parallel", [False, True])
def test_every_read_of_a_batch_sees_one_state_while_another_client_writes(
    table_service: TableServiceStub, project: Project, writer: threading.Event, parallel: bool
) -> None:
    assert writer.wait(30)
    counts = {"op": "count", "table": "events", "filters": {"kind": "click"}}
    newest = {"table": "events", "filters": {"kind": "click"}, "limit": 1000}
    seen = set()
    for _ in range(5):
        reply = batch(
            table_service, project, {"operations": [counts, newest] * 25, "parallel": parallel}
        )
        found = {r.count for r in reply.results[0::2]} | {len(r.rows) for r in reply.results[1::2]}
        assert len(found) == 1, found  # every operation read the same rows
        seen |= found
    assert len(seen) > 1  # the writer did commit while the batches ran


def test_parallel_batches_sharing_the_pool_all_finish(
    table_service: TableServiceStub, project: Project, events: str
) -> None:
    # Each batch may hold up to concurrency + 1 connections; together they want more than the
    # pool has, and must wait for one another rather than each hold some and wait for more.
    body = {"operations": READS * 8, "parallel": True}
    expected = without_times(batch(table_service, project, body))
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: batch(table_service, project, body), range(12)))
    assert all(without_times(reply) == expected for reply in replies)
