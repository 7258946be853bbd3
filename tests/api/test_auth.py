"""Authentication and project checks, for unary and client-streaming RPCs alike."""

from __future__ import annotations

import grpc
import pytest

from tests.api.test_memory_upsert import SEED
from tests.plugins.checks import details
from tests.plugins.server import Project, ServerThread
from zerodb.v1 import memory_pb2
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub


def call(stub: MemoryServiceStub, project_id: str, metadata: tuple[tuple[str, str], ...]) -> object:
    return stub.BatchUpsertMemories(
        memory_pb2.BatchUpsertMemoriesRequest(project_id=project_id, records=SEED),
        metadata=metadata,
    )


def test_missing_key(memories: MemoryServiceStub, project: Project) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(memories, project.id, ())
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert details(caught.value)[0].reason == "API_KEY_MISSING"


def test_wrong_key(memories: MemoryServiceStub, project: Project) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(memories, project.id, (("x-api-key", "zdb_not-a-key"),))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert details(caught.value)[0].reason == "API_KEY_INVALID"


def test_another_projects_key(
    memories: MemoryServiceStub, project: Project, server: ServerThread
) -> None:
    other = Project(*server.new_key())
    with pytest.raises(grpc.RpcError) as caught:
        call(memories, project.id, other.auth)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert details(caught.value)[0].reason == "PROJECT_MISMATCH"


def test_missing_project_id(memories: MemoryServiceStub, project: Project) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(memories, "", project.auth)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1].field_violations[0].field == "project_id"


def test_bearer_key_accepted(memories: MemoryServiceStub, project: Project) -> None:
    reply = call(memories, project.id, (("authorization", f"Bearer {project.key}"),))
    assert reply.inserted == 2  # type: ignore[attr-defined]


def test_revoked_key_refused(memories: MemoryServiceStub, server: ServerThread) -> None:
    from zerodb_batch.storage import keys

    project_id, _ = server.new_key()

    async def make_and_revoke() -> str:
        async with server.app.db.pool.connection() as conn:
            key_id, key = await keys.create_key(conn, project_id)
            assert await keys.revoke_key(conn, key_id)
            return key

    key = server.run(make_and_revoke())
    with pytest.raises(grpc.RpcError) as caught:
        call(memories, project_id, (("x-api-key", key),))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_health_and_reflection_need_no_key(channel: grpc.Channel) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
