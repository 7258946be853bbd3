"""Every RlhfService RPC when PostgreSQL goes away: UNAVAILABLE, then served again."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from tests.api.test_rlhf_stream import chunk
from tests.plugins.checks import Outage, unavailable_then_recovers
from tests.plugins.server import Project, ServerThread
from zerodb.v1 import rlhf_pb2
from zerodb.v1.rlhf_pb2_grpc import RlhfServiceStub


def test_each_rpc_is_unavailable_then_recovers(
    outage: tuple[Outage, ServerThread],
) -> None:
    down, running = outage
    project = Project(*running.new_key())
    with grpc.insecure_channel(running.address) as channel:
        stub = RlhfServiceStub(channel)
        calls = _calls(stub, project)
        for call in calls.values():  # each works (and the key is in the server's auth cache)
            call()

        unavailable_then_recovers(down, calls)


def _calls(stub: RlhfServiceStub, project: Project) -> dict[str, Callable[[], object]]:
    auth = project.auth
    loads = iter(range(1000))  # every stream a load of its own

    def stream() -> object:
        return stub.StreamCreateInteractions(
            iter([chunk(project, 0, load_id=f"outage-{next(loads)}")]), metadata=auth
        )

    return {
        "batch": lambda: stub.BatchCreateInteractions(
            rlhf_pb2.BatchCreateInteractionsRequest(
                project_id=project.id, interactions=[rlhf_pb2.Interaction(prompt="p")]
            ),
            metadata=auth,
        ),
        "list": lambda: stub.ListInteractions(
            rlhf_pb2.ListInteractionsRequest(project_id=project.id), metadata=auth
        ),
        "stream": stream,
        "export": lambda: list(
            stub.ExportInteractions(
                rlhf_pb2.ExportInteractionsRequest(project_id=project.id, format="trl"),
                metadata=auth,
            )
        ),
    }
