"""Update, delete, list, streamed loads and GetLoad when PostgreSQL goes away: UNAVAILABLE."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from tests.api.test_memory_stream import chunk
from tests.plugins.checks import Outage, unavailable_then_recovers
from tests.plugins.server import Project, ServerThread
from zerodb.v1 import load_pb2, memory_pb2
from zerodb.v1.load_pb2_grpc import LoadServiceStub
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub


def test_each_rpc_is_unavailable_then_recovers(
    outage: tuple[Outage, ServerThread],
) -> None:
    down, running = outage
    project = Project(*running.new_key())
    with grpc.insecure_channel(running.address) as channel:
        memories, loads = MemoryServiceStub(channel), LoadServiceStub(channel)
        calls = _calls(memories, loads, project)
        assert memories.StreamUpsertMemories(iter([chunk(project, 0)]), metadata=project.auth)
        # (the call above also put the key in the server's auth cache)

        unavailable_then_recovers(down, calls)


def _calls(
    memories: MemoryServiceStub, loads: LoadServiceStub, project: Project
) -> dict[str, Callable[[], object]]:
    auth = project.auth
    return {
        "update": lambda: memories.BatchUpdateMemories(
            memory_pb2.BatchUpdateMemoriesRequest(
                project_id=project.id, updates=[memory_pb2.MemoryUpdate(id="x", content="y")]
            ),
            metadata=auth,
        ),
        "delete": lambda: memories.BatchDeleteMemories(
            memory_pb2.BatchDeleteMemoriesRequest(project_id=project.id, ids=["x"]), metadata=auth
        ),
        "list": lambda: memories.ListMemories(
            memory_pb2.ListMemoriesRequest(project_id=project.id), metadata=auth
        ),
        "stream": lambda: memories.StreamUpsertMemories(iter([chunk(project, 0)]), metadata=auth),
        "get_load": lambda: loads.GetLoad(
            load_pb2.GetLoadRequest(project_id=project.id, load_id="load-1"), metadata=auth
        ),
    }
