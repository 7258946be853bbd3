"""What callers see when PostgreSQL goes away, and what start-up says about a bad database."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import grpc
import psycopg
import pytest

from tests.api.test_memory_upsert import SEED
from tests.plugins.checks import Outage, details, retry_unavailable
from tests.plugins.serve import Serve, free_port, serve_env
from tests.plugins.server import Project, ServerThread
from zerodb.v1 import memory_pb2
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub

T = TypeVar("T")

PLAIN_POSTGRES = os.environ.get(
    "ZERODB_TEST_PLAIN_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def test_postgres_down_is_unavailable_then_recovers(outage: tuple[Outage, ServerThread]) -> None:
    down, running = outage
    project = Project(*running.new_key())
    with grpc.insecure_channel(running.address) as channel:
        stub = MemoryServiceStub(channel)
        request = memory_pb2.BatchUpsertMemoriesRequest(project_id=project.id, records=SEED)
        assert stub.BatchUpsertMemories(request, metadata=project.auth).inserted == 2

        down.allow(False)
        for call in (
            lambda: stub.BatchUpsertMemories(request, metadata=project.auth),
            lambda: stub.BatchGetMemories(
                memory_pb2.BatchGetMemoriesRequest(project_id=project.id, ids=["x"]),
                metadata=project.auth,
            ),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
            assert details(caught.value)[0].reason == "DEPENDENCY_UNAVAILABLE"

        down.allow(True)  # the same server serves again, without a restart, once it reconnects
        assert (
            retry_unavailable(
                lambda: stub.BatchUpsertMemories(request, metadata=project.auth)
            ).inserted
            == 2
        )


def test_external_postgres_without_pgvector_fails_at_start(tmp_path: Path) -> None:
    try:
        with psycopg.connect(PLAIN_POSTGRES, connect_timeout=3) as conn:
            has_vector = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone()
    except psycopg.OperationalError:
        pytest.skip(f"no PostgreSQL at {PLAIN_POSTGRES} (set ZERODB_TEST_PLAIN_POSTGRES_URL)")
    if has_vector:
        pytest.skip(f"{PLAIN_POSTGRES} has pgvector; this test needs one without")
    env = serve_env(
        tmp_path,
        f"127.0.0.1:{free_port()}",
        ZERODB_DATABASE_URL=PLAIN_POSTGRES,
        ZERODB_REDIS_URL="redis://127.0.0.1:1/0",
    )
    serve = Serve(env)
    assert serve.exit_code() == 2
    err = "".join(serve.stderr)
    assert "'vector' extension (pgvector)" in err
    assert "Traceback" not in err
