"""`serve --workers N`: several processes on one port (SO_REUSEPORT), as a user runs it."""

from __future__ import annotations

import os
import re
import signal
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest

from tests.plugins.checks import wait_for
from tests.plugins.serve import Serve, free_port, serve_env
from tests.plugins.services import Backends
from zerodb.v1 import memory_pb2
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub

pytestmark = pytest.mark.slow

UPSERT_LINE = re.compile(r"\[pid (\d+)\]: rpc /zerodb\.v1\.MemoryService/BatchUpsertMemories")


class Running:
    """A `serve --workers 2`: its address, worker pids, first-start key and metrics directory."""

    def __init__(self, serve: Serve, metrics_dir: Path) -> None:
        self.serve = serve
        self.metrics_dir = metrics_dir
        self.address = serve.wait_for(r"serving on (\S+)")[1]
        self.pids = {int(p) for p in serve.wait_for(r"workers: ([\d ]+)")[1].split()}
        self.project = serve.wait_for(r"project_id: (\S+)")[1]
        self.key = serve.wait_for(r"api_key: (\S+)")[1]

    def upsert_on_a_new_connection(self) -> bool:
        # A channel of its own (no shared subchannel): a new TCP connection, which the kernel
        # gives to one worker or the other.
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(self.address, options=options) as channel:
            request = memory_pb2.BatchUpsertMemoriesRequest(
                project_id=self.project, records=[memory_pb2.Memory(content="x")]
            )
            reply = MemoryServiceStub(channel).BatchUpsertMemories(
                request, metadata=(("x-api-key", self.key),)
            )
        return reply.inserted == 1

    def pids_that_served(self) -> set[int]:
        return {int(m[1]) for line in list(self.serve.stderr) if (m := UPSERT_LINE.search(line))}

    def logged(self, text: str) -> bool:
        return any(text in line for line in list(self.serve.stderr))


@pytest.fixture
def running(own_database: str, backends: Backends, data_dir: Path) -> Iterator[Running]:
    with ExitStack() as stack:
        metrics_dir = data_dir.parent / "metrics"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        (metrics_dir / "counter_999999.db").write_bytes(b"left by an earlier run")
        env = serve_env(
            data_dir,
            "127.0.0.1:0",
            ZERODB_DATABASE_URL=own_database,
            ZERODB_REDIS_URL=backends.redis_url,
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        )
        serve = Serve(env, "serve", "--workers", "2")
        stack.callback(serve.stop)
        yield Running(serve, metrics_dir)


def test_two_workers_answer_on_one_port(running: Running) -> None:
    assert len(running.pids) == 2 and os.getpid() not in running.pids
    assert not (running.metrics_dir / "counter_999999.db").exists(), "the parent empties it"

    def both_served() -> bool:
        running.upsert_on_a_new_connection()
        return running.pids_that_served() == running.pids

    wait_for(both_served, "both workers to answer a call")
    assert running.serve.stop() == 0
    assert not any(_alive(pid) for pid in running.pids), "stopping the parent stops them"


def test_a_worker_that_dies_is_replaced_and_its_gauges_go(running: Running) -> None:
    dead = min(running.pids)
    gauges = running.metrics_dir / f"gauge_liveall_{dead}.db"
    wait_for(gauges.exists, "the worker's live gauges")
    os.kill(dead, signal.SIGKILL)
    wait_for(lambda: running.logged(f"worker {dead} exited"), "the parent to see it")
    wait_for(lambda: not gauges.exists(), "mark_process_dead to drop its live gauges")
    wait_for(running.upsert_on_a_new_connection, "the service to answer")
    started = wait_for(lambda: _replacement(running, dead), "the replacement's pid")
    assert running.serve.stop() == 0
    assert not any(_alive(pid) for pid in (running.pids - {dead}) | {started})


def _replacement(running: Running, dead: int) -> int | None:
    for line in list(running.serve.stderr):
        if m := re.search(rf"worker (\d+) started in place of {dead}", line):
            return int(m[1])
    return None


def test_a_port_held_by_another_program_is_a_start_up_error(
    own_database: str, backends: Backends, data_dir: Path
) -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):  # plain: no SO_REUSEPORT
        env = serve_env(
            data_dir,
            f"127.0.0.1:{port}",
            ZERODB_DATABASE_URL=own_database,
            ZERODB_REDIS_URL=backends.redis_url,
        )
        serve = Serve(env, "serve", "--workers", "2")
        assert serve.exit_code() == 2
    assert "in use" in "".join(serve.stderr)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
