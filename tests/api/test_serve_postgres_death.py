"""`zerodb-batch serve` as a user runs it, with its embedded PostgreSQL's postmaster SIGKILLed:
calls answer UNAVAILABLE at once (well within a client deadline far below the 10 s pool
timeout) until the supervisor has restarted it, then succeed again without a restart of `serve`,
and what was committed before is still there."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2
from grpc_health.v1.health_pb2_grpc import HealthStub

from tests.api.test_memory_upsert import SEED
from tests.plugins.checks import retry_unavailable, wait_for
from tests.plugins.serve import Serve, free_port, serve_env
from zerodb.v1 import memory_pb2
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub


def postmaster(data_dir: Path) -> psutil.Process:
    return psutil.Process(int((data_dir / "pg" / "postmaster.pid").read_text().split()[0]))


def checkpointer(pm: psutil.Process) -> psutil.Process:
    """The postmaster's checkpointer: a child that keeps its shared memory attached."""
    found = [c for c in pm.children() if "checkpointer" in " ".join(c.cmdline())]
    assert found, f"postmaster {pm.pid} has no checkpointer child"
    return found[0]


def health(channel: grpc.Channel) -> int:
    return HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status


def test_a_killed_postmaster_is_restarted_and_calls_succeed_again(data_dir: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    serve = Serve(serve_env(data_dir, address))  # the default pool timeout: 10 s
    serve.wait_for(r"zerodb-batch serving on")
    project = serve.wait_for(r"project_id: (\S+)")[1]
    auth = (("x-api-key", serve.wait_for(r"api_key: (zdb_\S+)")[1]),)
    try:
        with grpc.insecure_channel(address) as channel:
            stub = MemoryServiceStub(channel)
            upsert = memory_pb2.BatchUpsertMemoriesRequest(project_id=project, records=SEED)
            ids = list(stub.BatchUpsertMemories(upsert, metadata=auth).ids)
            get = memory_pb2.BatchGetMemoriesRequest(project_id=project, ids=ids)

            killed = postmaster(data_dir)
            held = checkpointer(killed)
            held.suspend()  # stopped, it cannot exit: PostgreSQL cannot start again before
            try:
                os.kill(killed.pid, signal.SIGKILL)
                killed.wait(30)
                wait_for(lambda: "waiting for" in "".join(serve.stderr), "the supervisor to wait")
                with pytest.raises(grpc.RpcError) as caught:  # not DEADLINE_EXCEEDED:
                    stub.BatchGetMemories(get, metadata=auth, timeout=5)  # no pool wait
                assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
                wait_for(lambda: health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING,
                         "NOT_SERVING")  # fmt: skip
            finally:
                held.resume()
            released = time.monotonic()

            got = retry_unavailable(lambda: stub.BatchGetMemories(get, metadata=auth))
            recovered = time.monotonic() - released
            assert [m.id for m in got.memories] == ids  # committed before the kill
            assert postmaster(data_dir).pid != killed.pid
            wait_for(lambda: health(channel) == health_pb2.HealthCheckResponse.SERVING, "SERVING")
            again = stub.BatchUpsertMemories(upsert, metadata=auth)
            assert again.inserted == len(SEED)
        print(f"\ncalls succeed {recovered:.2f} s after the last orphan may exit")
    finally:
        code = serve.stop()
    assert code == 0
    leftovers = [
        p for p in psutil.process_iter(["cmdline"])
        if str(data_dir) in " ".join(p.info["cmdline"] or ())
    ]  # fmt: skip
    assert leftovers == []
