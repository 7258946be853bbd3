"""While PostgreSQL is unreachable, calls fail fast: UNAVAILABLE within about a second (the
dependency monitor's probe), not at the pool timeout, including the calls that were already
waiting for a connection; and the server serves again by itself once it is back.

The server here is given a database URL (as with an external PostgreSQL) and a pool timeout of
60 s; every call's client deadline is far below that, so an UNAVAILABLE answer (rather than
DEADLINE_EXCEEDED) shows the call did not wait for the pool."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2
from grpc_health.v1.health_pb2_grpc import HealthStub

from tests.api.test_memory_upsert import SEED
from tests.plugins.checks import Outage, details, outage_database, retry_unavailable, wait_for
from tests.plugins.server import Project, ServerThread, server_settings
from tests.plugins.services import Backends
from zerodb.v1 import memory_pb2
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub

POOL_TIMEOUT = 60.0  # what a call would wait without failing fast
DEADLINE = 10.0  # each call's client deadline: far below the pool timeout


@pytest.fixture
def slow_pool(backends: Backends) -> Iterator[tuple[Outage, ServerThread]]:
    """A server whose pool holds 2 connections and would wait 60 s for one."""
    with outage_database(backends) as down:
        settings = server_settings(
            down.url,
            backends.redis_url,
            pool_min=1,
            pool_max=2,
            pool_timeout=POOL_TIMEOUT,
            auth_cache_seconds=600,  # the outage hits the calls' own work, not the key lookup
        )
        running = ServerThread(settings)
        try:
            yield down, running
        finally:
            running.close()


def health(channel: grpc.Channel) -> int:
    return HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE).status


def unavailable(call: Future[object]) -> grpc.RpcError:
    """The call's error, which must be UNAVAILABLE with reason DEPENDENCY_UNAVAILABLE."""
    error = call.exception(timeout=DEADLINE + 5)
    assert isinstance(error, grpc.RpcError), f"the call did not fail: {error!r}"
    assert error.code() is grpc.StatusCode.UNAVAILABLE, error
    assert details(error)[0].reason == "DEPENDENCY_UNAVAILABLE"
    return error


def test_calls_fail_fast_while_postgres_is_down_and_recover(
    slow_pool: tuple[Outage, ServerThread],
) -> None:
    down, running = slow_pool
    project = Project(*running.new_key())
    with grpc.insecure_channel(running.address) as channel, ThreadPoolExecutor(4) as threads:
        stub = MemoryServiceStub(channel)
        upsert = memory_pb2.BatchUpsertMemoriesRequest(project_id=project.id, records=SEED)
        ids = list(stub.BatchUpsertMemories(upsert, metadata=project.auth).ids)
        get = memory_pb2.BatchGetMemoriesRequest(project_id=project.id, ids=ids)

        def read() -> object:
            return stub.BatchGetMemories(get, metadata=project.auth, timeout=DEADLINE)

        # Two reads hold both pooled connections (blocked behind the test's lock) and a third
        # waits for one of them: the outage must end its wait too, not leave it to the pool
        # timeout.
        locker = psycopg.connect(down.url)
        try:
            locker.execute("LOCK TABLE memories IN ACCESS EXCLUSIVE MODE")
            calls = [threads.submit(read) for _ in range(3)]
            wait_for(lambda: running.app.db.stats()["requests_waiting"] >= 1, "a queued call")
            cut = time.monotonic()
            down.allow(False, last=(locker.info.backend_pid,))  # the locker's session too
            for call in calls:
                unavailable(call)
            queued_for = time.monotonic() - cut
        finally:
            locker.close()

        # Once the monitor has seen it (NOT_SERVING), calls are refused before any wait.
        wait_for(lambda: health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING,
                 "NOT_SERVING")  # fmt: skip
        asked = time.monotonic()
        refused = unavailable(threads.submit(read))
        refused_in = time.monotonic() - asked
        assert "unreachable" in (refused.details() or "")

        down.allow(True)  # the same server serves again by itself
        back = time.monotonic()
        got = retry_unavailable(read)
        back_in = time.monotonic() - back
        assert [m.id for m in got.memories] == ids  # type: ignore[attr-defined]
        wait_for(lambda: health(channel) == health_pb2.HealthCheckResponse.SERVING, "SERVING")
        assert running.app.db.stats()["requests_waiting"] == 0
    print(
        f"\nall 3 calls UNAVAILABLE {queued_for:.2f} s after the cut (pool timeout "
        f"{POOL_TIMEOUT:g} s); a new call refused in {refused_in * 1000:.0f} ms; "
        f"served again {back_in:.2f} s after the database was let back"
    )
