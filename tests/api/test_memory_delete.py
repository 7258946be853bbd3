"""BatchDeleteMemories through a real server and channel."""

from __future__ import annotations

import grpc
import psycopg
import pytest

from tests.api.test_memory_upsert import count, upsert
from tests.plugins.checks import assert_too_large, details
from tests.plugins.server import Project
from zerodb.v1 import common_pb2, memory_pb2
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub

Db = psycopg.Connection[tuple[object, ...]]


def seed(stub: MemoryServiceStub, project: Project, n: int) -> list[str]:
    ids = [f"mem-{i}" for i in range(n)]
    upsert(stub, project, [memory_pb2.Memory(id=i, content=i) for i in ids])
    return ids


def delete(
    stub: MemoryServiceStub, project: Project, ids: list[str], **kw: object
) -> memory_pb2.BatchDeleteMemoriesResponse:
    request = memory_pb2.BatchDeleteMemoriesRequest(project_id=project.id, ids=ids, **kw)
    return stub.BatchDeleteMemories(request, metadata=project.auth)


def test_seed_body_deletes_and_reports_each_id(
    memories: MemoryServiceStub, project: Project, db: Db
) -> None:
    seed(memories, project, 3)
    reply = delete(memories, project, ["mem-0", "mem-abc123", "mem-2"])
    assert [(r.index, r.id, r.outcome) for r in reply.results] == [
        (0, "mem-0", common_pb2.OUTCOME_DELETED),
        (1, "mem-abc123", common_pb2.OUTCOME_NOT_FOUND),
        (2, "mem-2", common_pb2.OUTCOME_DELETED),
    ]
    assert (reply.deleted, reply.not_found) == (2, 1)
    assert count(db, project) == 1


def test_deleting_twice_is_harmless(memories: MemoryServiceStub, project: Project) -> None:
    seed(memories, project, 1)
    assert delete(memories, project, ["mem-0", "mem-0"]).deleted == 1
    again = delete(memories, project, ["mem-0"])
    assert (again.deleted, again.not_found) == (0, 1)
    assert again.results[0].outcome == common_pb2.OUTCOME_NOT_FOUND


def test_another_projects_memories_stay(
    memories: MemoryServiceStub, project: Project, server: object, db: Db
) -> None:
    other = Project(*server.new_key())  # type: ignore[attr-defined]
    seed(memories, other, 2)
    assert delete(memories, project, ["mem-0", "mem-1"]).not_found == 2
    assert count(db, other) == 2


def test_500_accepted_501_refused(memories: MemoryServiceStub, project: Project, db: Db) -> None:
    ids = seed(memories, project, 500)
    with pytest.raises(grpc.RpcError) as caught:
        delete(memories, project, [*ids, "one-more"])
    assert_too_large(caught.value, "ids", 500, 501)
    assert count(db, project) == 500
    assert delete(memories, project, ids).deleted == 500
    assert count(db, project) == 0


def test_invalid_ids_refused_and_nothing_deleted(
    memories: MemoryServiceStub, project: Project, db: Db
) -> None:
    seed(memories, project, 1)
    with pytest.raises(grpc.RpcError) as caught:
        delete(memories, project, ["mem-0", "", "x" * 129])
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in details(caught.value)[1].field_violations] == ["ids[1]", "ids[2]"]
    assert count(db, project) == 1
    with pytest.raises(grpc.RpcError) as empty:
        delete(memories, project, [])
    assert empty.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_request_id_retry_returns_first_response(
    memories: MemoryServiceStub, project: Project
) -> None:
    seed(memories, project, 2)
    first = delete(memories, project, ["mem-0"], request_id="d-1")
    again = delete(memories, project, ["mem-0"], request_id="d-1")
    assert again == first and first.deleted == 1
    with pytest.raises(grpc.RpcError) as caught:
        delete(memories, project, ["mem-1"], request_id="d-1")
    assert details(caught.value)[0].reason == "REQUEST_ID_REUSED"
