"""CreateTable, ListTables and DeleteTable through a real server and channel."""

from __future__ import annotations

import grpc
import psycopg
import pytest

from tests.plugins.checks import details
from tests.plugins.server import Project, ServerThread
from tests.plugins.tables import batch, create_table, insert_rows
from zerodb.v1 import table_pb2
from zerodb.v1.table_pb2_grpc import TableServiceStub

Db = psycopg.Connection[tuple[object, ...]]


def list_tables(
    stub: TableServiceStub, project: Project, **kw: object
) -> table_pb2.ListTablesResponse:
    request = table_pb2.ListTablesRequest(project_id=project.id, **kw)  # type: ignore[arg-type]
    return stub.ListTables(request, metadata=project.auth)


def delete_table(stub: TableServiceStub, project: Project, name: str) -> int:
    request = table_pb2.DeleteTableRequest(project_id=project.id, name=name)
    return stub.DeleteTable(request, metadata=project.auth).rows_deleted


def test_create_answers_the_table_and_a_duplicate_is_already_exists(
    table_service: TableServiceStub, project: Project
) -> None:
    request = table_pb2.CreateTableRequest(
        project_id=project.id, name="agents", description="agents and their state",
        indexed_fields=["status", "profile.age"],
    )  # fmt: skip
    table = table_service.CreateTable(request, metadata=project.auth).table
    assert (table.name, table.description) == ("agents", "agents and their state")
    assert list(table.indexed_fields) == ["status", "profile.age"]
    assert table.create_time.seconds > 0
    with pytest.raises(grpc.RpcError) as caught:
        table_service.CreateTable(request, metadata=project.auth)
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS
    info, _ = details(caught.value)
    assert (info.reason, info.metadata["table"]) == ("TABLE_EXISTS", "agents")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "REQUIRED"),
        ("9lives", "INVALID_TABLE_NAME"),
        ("x" * 129, "INVALID_TABLE_NAME"),
        ('x"; DROP TABLE memories;--', "INVALID_TABLE_NAME"),
        ("t\x00", "INVALID_TABLE_NAME"),
    ],
)
def test_a_bad_name_is_invalid_argument_naming_the_rule(
    table_service: TableServiceStub, project: Project, db: Db, name: str, reason: str
) -> None:
    for call in (
        lambda: create_table(table_service, project, name),
        lambda: delete_table(table_service, project, name),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        _, bad = details(caught.value)
        assert [(v.field, v.reason) for v in bad.field_violations] == [("name", reason)]
    assert db.execute("SELECT count(*) FROM memories").fetchone() is not None  # still there


def test_bad_indexed_fields_and_description_are_all_reported(
    table_service: TableServiceStub, project: Project
) -> None:
    request = table_pb2.CreateTableRequest(
        project_id=project.id, name="t", description="d" * 1025,
        indexed_fields=["ok", "bad path", "$x"],
    )  # fmt: skip
    with pytest.raises(grpc.RpcError) as caught:
        table_service.CreateTable(request, metadata=project.auth)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in details(caught.value)[1].field_violations}
    assert fields == {"description", "indexed_fields[1]", "indexed_fields[2]"}
    request = table_pb2.CreateTableRequest(
        project_id=project.id, name="t", indexed_fields=[f"f{i}" for i in range(9)]
    )
    with pytest.raises(grpc.RpcError) as caught:
        table_service.CreateTable(request, metadata=project.auth)
    assert details(caught.value)[1].field_violations[0].field == "indexed_fields"
    assert not list_tables(table_service, project).tables


def test_list_pages_by_name_and_every_table_appears_once(
    table_service: TableServiceStub, project: Project
) -> None:
    names = ["b", "A", "a-1", "c_2", "Z", "a"]
    for name in names:
        create_table(table_service, project, name)
    seen, token, pages = [], "", 0
    while True:
        page = list_tables(table_service, project, page_size=4, page_token=token)
        seen += [t.name for t in page.tables]
        pages += 1
        if not (token := page.next_page_token):
            break
    assert seen == sorted(names) and pages == 2  # byte order: upper case first
    assert [t.name for t in list_tables(table_service, project).tables] == sorted(names)


def test_list_refuses_a_token_not_ours_and_a_negative_page_size(
    table_service: TableServiceStub, project: Project
) -> None:
    for kw, reason in (
        ({"page_token": "made-up"}, "PAGE_TOKEN_INVALID"),
        ({"page_size": -1}, "OUT_OF_RANGE"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            list_tables(table_service, project, **kw)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        info, bad = details(caught.value)
        assert reason in (info.reason, bad.field_violations[0].reason)


def test_delete_removes_the_rows_and_the_name_is_free_again(
    table_service: TableServiceStub, project: Project, db: Db
) -> None:
    create_table(table_service, project, "agents", "status")
    insert_rows(table_service, project, "agents", [{"status": "active"}] * 3)
    assert delete_table(table_service, project, "agents") == 3
    assert not list_tables(table_service, project).tables
    with pytest.raises(grpc.RpcError) as caught:
        delete_table(table_service, project, "agents")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert details(caught.value)[0].reason == "TABLE_NOT_FOUND"
    create_table(table_service, project, "agents")  # a new, empty table
    reply = batch(table_service, project, {"operations": [{"op": "count", "table": "agents"}]})
    assert reply.results[0].count == 0


def test_another_projects_tables_are_invisible_and_untouchable(
    table_service: TableServiceStub, project: Project, server: ServerThread
) -> None:
    other = Project(*server.new_key())
    create_table(table_service, other, "agents")
    insert_rows(table_service, other, "agents", [{"status": "active"}])
    assert not list_tables(table_service, project).tables
    reply = batch(
        table_service,
        project,
        {
            "operations": [
                {"table": "agents"},
                {"op": "delete", "table": "agents", "all_rows": True},
            ]
        },
    )
    assert [r.error.code for r in reply.results] == [grpc.StatusCode.NOT_FOUND.value[0]] * 2
    with pytest.raises(grpc.RpcError) as caught:
        delete_table(table_service, project, "agents")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    create_table(table_service, project, "agents")  # the same name, a table of its own
    mine = batch(table_service, project, {"operations": [{"op": "count", "table": "agents"}]})
    theirs = batch(table_service, other, {"operations": [{"op": "count", "table": "agents"}]})
    assert (mine.results[0].count, theirs.results[0].count) == (0, 1)
    # A key works for its own project only, whatever the table.
    request = table_pb2.DeleteTableRequest(project_id=other.id, name="agents")
    with pytest.raises(grpc.RpcError) as caught:
        table_service.DeleteTable(request, metadata=project.auth)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
