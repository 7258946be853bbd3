"""Metrics across processes (prometheus_client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR):
two `serve` processes share the directory, as `serve --workers N` will; a scrape of either counts
the calls of both, and a process that stops takes its live gauges with it, not its counts."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path

import grpc

from tests.observability.test_metrics import UPSERT
from tests.plugins.metrics import scrape
from tests.plugins.serve import Serve, free_port, serve_env
from tests.plugins.services import Backends
from zerodb.v1 import memory_pb2
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub

CALLS = "zerodb_rpc_calls_total"


class Worker:
    """One `serve` process of the pair: its gRPC address and HTTP base URL."""

    def __init__(self, serve: Serve, http: str) -> None:
        self.serve = serve
        self.http = http
        self.address = serve.wait_for(r"serving on (\S+)")[1]


def start(stack: ExitStack, data_dir: Path, env: dict[str, str]) -> Worker:
    http = f"127.0.0.1:{free_port()}"
    serve = Serve(serve_env(data_dir, "127.0.0.1:0", ZERODB_HTTP_LISTEN=http, **env))
    stack.callback(serve.stop)
    return Worker(serve, f"http://{http}")


def upsert(worker: Worker, project: str, key: str, times: int) -> None:
    request = memory_pb2.BatchUpsertMemoriesRequest(
        project_id=project, records=[memory_pb2.Memory(content="x")]
    )
    with grpc.insecure_channel(worker.address) as channel:
        stub = MemoryServiceStub(channel)
        for _ in range(times):
            stub.BatchUpsertMemories(request, metadata=(("x-api-key", key),))


def test_two_processes_sharing_a_directory_count_every_call_once(
    own_database: str, backends: Backends, data_dir: Path
) -> None:
    with ExitStack() as stack:
        shared = stack.enter_context(tempfile.TemporaryDirectory(prefix="zdb-metrics-"))
        env = {
            "ZERODB_DATABASE_URL": own_database,
            "ZERODB_REDIS_URL": backends.redis_url,
            "PROMETHEUS_MULTIPROC_DIR": shared,
        }
        first = start(stack, data_dir / "a", env)
        project = first.serve.wait_for(r"project_id: (\S+)")[1]
        key = first.serve.wait_for(r"api_key: (\S+)")[1]
        second = start(stack, data_dir / "b", env)

        upsert(first, project, key, 3)
        upsert(second, project, key, 4)
        for worker in (first, second):
            seen = scrape(worker.http)
            assert seen.value(CALLS, **UPSERT, code="OK") == 7
            assert seen.value("zerodb_rpc_items_total", **UPSERT, outcome="inserted") == 7
            # Gauges combine as documented: pools add up, process metrics per pid.
            assert seen.value("zerodb_db_pool_max") == 20
            pids = {s.labels["pid"] for s in seen.matching("process_resident_memory_bytes")}
            assert pids == {str(first.serve.proc.pid), str(second.serve.proc.pid)}

        assert second.serve.stop() == 0
        left = scrape(first.http)
        assert left.value(CALLS, **UPSERT, code="OK") == 7, "a stopped worker's counts stay"
        assert left.value("zerodb_db_pool_max") == 10, "its live gauges go"
        pids = {s.labels["pid"] for s in left.matching("process_resident_memory_bytes")}
        assert pids == {str(first.serve.proc.pid)}
