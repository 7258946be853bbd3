"""Every TableService RPC when PostgreSQL goes away: UNAVAILABLE, then served again."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from tests.api.test_table_stream import chunk
from tests.plugins.checks import Outage, unavailable_then_recovers
from tests.plugins.server import Project, ServerThread
from tests.plugins.tables import batch, create_table
from zerodb.v1 import table_pb2
from zerodb.v1.table_pb2_grpc import TableServiceStub

QUERY = {"table": "rows", "filters": {"chunk": 0}}


def test_each_rpc_is_unavailable_then_recovers(
    outage: tuple[Outage, ServerThread],
) -> None:
    down, running = outage
    project = Project(*running.new_key())
    with grpc.insecure_channel(running.address) as channel:
        stub = TableServiceStub(channel)
        create_table(stub, project, "rows", "chunk")  # (also puts the key in the auth cache)
        calls = _calls(stub, project)

        unavailable_then_recovers(down, calls)


def _calls(stub: TableServiceStub, project: Project) -> dict[str, Callable[[], object]]:
    auth = project.auth
    return {
        "create": lambda: create_table(stub, project, "other"),
        "list": lambda: stub.ListTables(
            table_pb2.ListTablesRequest(project_id=project.id), metadata=auth
        ),
        "read": lambda: batch(stub, project, {"operations": [QUERY]}),
        "parallel read": lambda: batch(
            stub, project, {"operations": [QUERY] * 4, "parallel": True}
        ),
        "write": lambda: batch(
            stub, project, {"operations": [{"op": "insert", "table": "rows", "rows": [{}]}]}
        ),
        "stream": lambda: stub.StreamInsertRows(iter([chunk(project, 0)]), metadata=auth),
        "delete": lambda: stub.DeleteTable(
            table_pb2.DeleteTableRequest(project_id=project.id, name="other"), metadata=auth
        ),
    }
