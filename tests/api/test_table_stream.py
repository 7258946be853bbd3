"""StreamInsertRows and LoadService.GetLoad through a real server and channel."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import struct_pb2

from tests.api.test_memory_stream import Feed, get_load
from tests.plugins.checks import details, wait_for
from tests.plugins.server import Project
from tests.plugins.tables import batch, create_table, rows_of
from zerodb.v1 import load_pb2, table_pb2
from zerodb.v1.load_pb2_grpc import LoadServiceStub
from zerodb.v1.table_pb2_grpc import TableServiceStub
from zerodb_batch.storage.table_load import ANALYZE_AFTER_ROWS

Db = psycopg.Connection[tuple[object, ...]]
Request = table_pb2.StreamInsertRowsRequest


@pytest.fixture
def loads(channel: grpc.Channel) -> LoadServiceStub:
    return LoadServiceStub(channel)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def chunk(
    project: Project, offset: int, n: int = 4, table: str = "rows", load_id: str = "load-1",
    **kw: Any,
) -> Request:  # fmt: skip
    """n rows naming their chunk: a chunk written twice would leave twice the rows."""
    rows = [struct({"chunk": offset, "i": i, "text": "tab\there \\ and é"}) for i in range(n)]
    return Request(
        project_id=project.id, load_id=load_id, offset=offset, table=table, rows=rows, **kw
    )


def stream(
    stub: TableServiceStub, project: Project, requests: Iterable[Request]
) -> table_pb2.StreamInsertRowsResponse:
    return stub.StreamInsertRows(iter(requests), metadata=project.auth)


def loaded(stub: TableServiceStub, project: Project, table: str = "rows") -> list[tuple[int, int]]:
    """(chunk, i) of every row of the table, in row_id order (as inserted)."""
    reply = batch(stub, project, {"operations": [{"table": table, "limit": 1000}]})
    return [(row["chunk"], row["i"]) for row in rows_of(reply.results[0])]


@pytest.fixture
def table(table_service: TableServiceStub, project: Project) -> str:
    create_table(table_service, project, "rows", "chunk")
    return "rows"


def test_chunks_commit_with_their_progress_and_rows_keep_their_data(
    table_service: TableServiceStub, loads: LoadServiceStub, project: Project, table: str
) -> None:
    reply = stream(table_service, project, [chunk(project, o) for o in range(3)])
    assert (reply.chunks_committed, reply.chunks_skipped, list(reply.failures)) == (3, 0, [])
    load = reply.load
    assert (load.kind, load.state, load.next_offset, load.inserted) == (
        "rows", load_pb2.LOAD_STATE_DONE, 3, 12,
    )  # fmt: skip
    assert get_load(loads, project) == load
    assert loaded(table_service, project) == [(c, i) for c in range(3) for i in range(4)]
    found = batch(
        table_service, project, {"operations": [{"table": table, "filters": {"chunk": 2, "i": 3}}]}
    ).results[0]
    assert rows_of(found) == [{"chunk": 2, "i": 3, "text": "tab\there \\ and é"}]


def test_cut_stream_resumed_from_get_load_writes_every_row_once(
    table_service: TableServiceStub, loads: LoadServiceStub, project: Project, table: str
) -> None:
    feed = Feed()
    call = table_service.StreamInsertRows.future(iter(feed), metadata=project.auth)
    for offset in range(3):
        feed.send(chunk(project, offset))  # type: ignore[arg-type]
    wait_for(lambda: _next_offset(loads, project) == 3, "chunk 2 to commit")
    call.cancel()  # the stream breaks
    feed.close()
    load = get_load(loads, project)
    assert (load.next_offset, load.state) == (3, load_pb2.LOAD_STATE_RUNNING)

    reply = stream(table_service, project, [chunk(project, o) for o in range(1, 6)])
    assert (reply.chunks_committed, reply.chunks_skipped) == (3, 2)
    assert (reply.load.next_offset, reply.load.state) == (6, load_pb2.LOAD_STATE_DONE)
    assert loaded(table_service, project) == [(c, i) for c in range(6) for i in range(4)]


def _next_offset(loads: LoadServiceStub, project: Project) -> int:
    try:
        return get_load(loads, project).next_offset
    except grpc.RpcError:
        return -1


def test_a_table_that_does_not_exist_is_not_found_and_nothing_is_counted(
    table_service: TableServiceStub, loads: LoadServiceStub, project: Project
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stream(table_service, project, [chunk(project, 0, table="nope")])
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    info, _ = details(caught.value)
    assert (info.reason, info.metadata["table"]) == ("TABLE_NOT_FOUND", "nope")
    with pytest.raises(grpc.RpcError) as none:
        get_load(loads, project)
    assert none.value.code() is grpc.StatusCode.NOT_FOUND


def test_every_chunk_names_the_same_table(
    table_service: TableServiceStub, project: Project, table: str
) -> None:
    create_table(table_service, project, "other")
    with pytest.raises(grpc.RpcError) as caught:
        stream(table_service, project, [chunk(project, 0), chunk(project, 1, table="other")])
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    violation = details(caught.value)[1].field_violations[0]
    assert (violation.field, violation.reason) == ("table", "TABLE_CHANGED")
    assert loaded(table_service, project) == [(0, i) for i in range(4)]  # chunk 0 committed


def test_a_bad_table_name_is_refused_before_any_row(
    table_service: TableServiceStub, project: Project
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stream(table_service, project, [chunk(project, 0, table='r"; DROP TABLE loads;--')])
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1].field_violations[0].reason == "INVALID_TABLE_NAME"


def _bad_rows(request: Request) -> Request:
    request.rows[1].fields["n"].number_value = float("nan")
    request.rows[3].fields["blob"].string_value = "x" * (1024 * 1024)
    return request


def test_an_invalid_row_refuses_its_chunk(
    table_service: TableServiceStub, project: Project, table: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stream(table_service, project, [chunk(project, 0), _bad_rows(chunk(project, 1))])
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    info, bad = details(caught.value)
    assert [(v.field, v.reason) for v in bad.field_violations] == [
        ("rows[1]", "INVALID_VALUE"), ("rows[3]", "TOO_LONG"),
    ]  # fmt: skip
    assert info.metadata["offset"] == "1"
    assert loaded(table_service, project) == [(0, i) for i in range(4)]


def test_partial_success_writes_the_valid_rows_and_lists_the_others(
    table_service: TableServiceStub, project: Project, table: str
) -> None:
    reply = stream(table_service, project, [_bad_rows(chunk(project, 0, partial_success=True))])
    assert [(f.offset, f.index) for f in reply.failures] == [(0, 1), (0, 3)]
    assert (reply.load.inserted, reply.load.failed) == (2, 2)
    assert loaded(table_service, project) == [(0, 0), (0, 2)]


def test_a_table_deleted_during_a_load_stops_it(
    table_service: TableServiceStub, project: Project, table: str
) -> None:
    feed = Feed()
    call = table_service.StreamInsertRows.future(iter(feed), metadata=project.auth)
    feed.send(chunk(project, 0))  # type: ignore[arg-type]
    wait_for(lambda: len(loaded(table_service, project)) == 4, "chunk 0 to commit")
    request = table_pb2.DeleteTableRequest(project_id=project.id, name=table)
    assert table_service.DeleteTable(request, metadata=project.auth).rows_deleted == 4
    create_table(table_service, project, table)  # the same name: another table
    feed.send(chunk(project, 1))  # type: ignore[arg-type]
    feed.close()
    with pytest.raises(grpc.RpcError) as caught:
        call.result(60)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert "deleted during the load" in (caught.value.details() or "")  # type: ignore[attr-defined]
    assert loaded(table_service, project) == []


def test_a_large_load_leaves_fresh_statistics(
    table_service: TableServiceStub, project: Project, table: str, db: Db
) -> None:
    def analyzed() -> int:
        row = db.execute(
            "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'table_rows'"
        ).fetchone()
        return int(row[0]) if row else 0  # type: ignore[call-overload]

    before = analyzed()
    stream(table_service, project, [chunk(project, 0, n=100, load_id="small")])
    assert analyzed() == before
    size = 5000
    chunks = [chunk(project, o, n=size, load_id="large") for o in range(ANALYZE_AFTER_ROWS // size)]
    assert stream(table_service, project, chunks).load.inserted == ANALYZE_AFTER_ROWS
    assert analyzed() == before + 1
