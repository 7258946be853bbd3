"""Key scopes and expiry through a real server: a read key reads and cannot write, a write key
cannot make tables, an expired key stops at once (whatever the cache), a revoked one at its next
lookup."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import grpc
import pytest

from tests.api.test_memory_upsert import SEED
from tests.plugins.checks import details
from tests.plugins.server import Project, ServerThread, server_settings
from tests.plugins.services import Backends
from tests.plugins.tables import batch, create_table
from zerodb.v1 import memory_pb2
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub
from zerodb.v1.table_pb2_grpc import TableServiceStub
from zerodb_batch.storage import keys


def keyed(server: ServerThread, project: Project, *scopes: str) -> Project:
    """Another key of `project`, holding only `scopes`."""
    return Project(*server.new_key(project.id, scopes))


def upsert(stub: MemoryServiceStub, project: Project) -> memory_pb2.BatchUpsertMemoriesResponse:
    request = memory_pb2.BatchUpsertMemoriesRequest(project_id=project.id, records=SEED)
    return stub.BatchUpsertMemories(request, metadata=project.auth)


def get(
    stub: MemoryServiceStub, project: Project, *ids: str
) -> memory_pb2.BatchGetMemoriesResponse:
    request = memory_pb2.BatchGetMemoriesRequest(project_id=project.id, ids=ids)
    return stub.BatchGetMemories(request, metadata=project.auth)


def assert_scope_missing(err: grpc.RpcError, needed: str) -> None:
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    info, _ = details(err)
    assert (info.reason, info.metadata["required_scope"]) == ("SCOPE_MISSING", needed)
    assert f"{needed!r} scope" in (err.details() or "")


def test_a_read_key_reads_and_cannot_write(
    memories: MemoryServiceStub, project: Project, server: ServerThread
) -> None:
    ids = list(upsert(memories, project).ids)
    reader = keyed(server, project, "read")
    assert len(get(memories, reader, *ids).memories) == 2
    with pytest.raises(grpc.RpcError) as caught:
        upsert(memories, reader)
    assert_scope_missing(caught.value, "write")
    assert len(get(memories, project, *ids).memories) == 2  # nothing more written


def test_a_read_key_cannot_stream_a_load(
    memories: MemoryServiceStub, project: Project, server: ServerThread
) -> None:
    reader = keyed(server, project, "read")
    chunk = memory_pb2.StreamUpsertMemoriesRequest(
        project_id=project.id, load_id="l-1", offset=0, records=SEED
    )
    with pytest.raises(grpc.RpcError) as caught:
        memories.StreamUpsertMemories(iter([chunk]), metadata=reader.auth)
    assert_scope_missing(caught.value, "write")


def test_batch_query_reads_with_a_read_key_and_writes_only_with_write(
    table_service: TableServiceStub, project: Project, server: ServerThread
) -> None:
    create_table(table_service, project, "notes")
    reader = keyed(server, project, "read")
    query = {"operations": [{"op": "count", "table": "notes"}]}
    assert batch(table_service, reader, query).succeeded == 1
    write = {"operations": [{"op": "count", "table": "notes"},
                            {"op": "insert", "table": "notes", "rows": [{"a": 1}]}]}  # fmt: skip
    with pytest.raises(grpc.RpcError) as caught:
        batch(table_service, reader, write)
    assert_scope_missing(caught.value, "write")
    writer = keyed(server, project, "write", "read")
    assert batch(table_service, writer, write).succeeded == 2


def test_making_tables_needs_admin(
    table_service: TableServiceStub, project: Project, server: ServerThread
) -> None:
    writer = keyed(server, project, "read", "write")
    with pytest.raises(grpc.RpcError) as caught:
        create_table(table_service, writer, "t")
    assert_scope_missing(caught.value, "admin")
    assert create_table(table_service, keyed(server, project, "admin"), "t").name == "t"


def test_a_revoked_key_stops_at_its_next_call(
    memories: MemoryServiceStub, server: ServerThread
) -> None:
    """The session server caches no key lookups (ZERODB_AUTH_CACHE_SECONDS=0): revocation bites
    at the next call. With a cache, within that many seconds (README, Security)."""
    project_id, _ = server.new_key()

    async def make() -> tuple[str, str]:
        async with server.app.db.pool.connection() as conn:
            return await keys.create_key(conn, project_id)

    key_id, key = server.run(make())
    holder = Project(project_id, key)
    assert get(memories, holder, "x").not_found == ["x"]

    async def revoke() -> bool:
        async with server.app.db.pool.connection() as conn:
            return await keys.revoke_key(conn, key_id)

    assert server.run(revoke())
    with pytest.raises(grpc.RpcError) as caught:
        get(memories, holder, "x")
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert details(caught.value)[0].reason == "API_KEY_INVALID"


@pytest.fixture(scope="module")
def caching_server(database_url: str, backends: Backends) -> Iterator[ServerThread]:
    """A server that trusts a key lookup for ten minutes."""
    running = ServerThread(
        server_settings(database_url, backends.redis_url, auth_cache_seconds=600)
    )
    yield running
    running.close()


def test_an_expired_key_stops_at_once_even_when_cached(caching_server: ServerThread) -> None:
    lifetime = 3.0
    holder = Project(*caching_server.new_key(expires_in=timedelta(seconds=lifetime)))
    made = time.monotonic()  # after: the key's expiry counts from its creation, which is before
    with grpc.insecure_channel(caching_server.address) as channel:
        stub = MemoryServiceStub(channel)
        assert get(stub, holder, "x").not_found == ["x"]  # now cached for ten minutes
        # Waiting out the key's lifetime, not timing the server: the next call must fail.
        time.sleep(max(0.0, made + lifetime + 0.2 - time.monotonic()))
        with pytest.raises(grpc.RpcError) as caught:
            get(stub, holder, "x")
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert details(caught.value)[0].reason == "API_KEY_EXPIRED"
