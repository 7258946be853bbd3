"""What one call costs the server: `zerodb-batch serve` against a bare `grpc.aio` server.

The bare server (a subprocess of this script, on loopback) serves only the standard health
service, with no interceptor: it is the least a Python `grpc.aio` server spends on a unary call
on this machine, the floor under every RPC of ours. Against it, one client calls ours, one call
at a time: the health check (our interceptor and server options, no handler work), a refused
BatchDeleteMemories (authenticated, decoded, validated, answered INVALID_ARGUMENT with details;
no database) and a BatchDeleteMemories of one unknown id (one statement in PostgreSQL).

Each prints calls/s as a fraction of the bare health check's, and the server's CPU per call
(from /proc): what is left once the floor is paid is ours (with what our server's background
tasks spend meanwhile: the relay's poll, the health monitor). Our server logs at WARNING, as in
every bench: the per-call log line is not written. Rounds alternate; medians print.

    python -m bench.call_floor [--calls 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import select
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bench.harness import backends, record, report, server_cpu, service, timed
from zerodb.v1 import memory_pb2, memory_pb2_grpc


async def _serve_bare() -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


@contextmanager
def bare_server() -> Iterator[tuple[str, int]]:
    """(address, pid) of a bare grpc.aio health server in a subprocess."""
    command = [sys.executable, "-m", "bench.call_floor", "--bare"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            if not select.select([proc.stdout], [], [], 30)[0]:
                raise RuntimeError("the bare server printed no port in 30 s")
            if not (port := proc.stdout.readline().strip()):
                raise RuntimeError(f"the bare server exited ({proc.wait()}) before serving")
            yield f"127.0.0.1:{port}", proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def quietly(call: Callable[[], object]) -> Callable[[], None]:
    """`call`, its refusal expected: the RpcError is the answer being measured."""

    def run() -> None:
        try:
            call()
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e

    return run


def per_call(call: Callable[[], object], calls: int, pid: int) -> tuple[float, float]:
    """(calls/s, server CPU seconds per call) of `calls` calls in a row."""

    def run() -> None:
        for _ in range(calls):
            call()

    cpu = server_cpu(pid)
    rate = calls / timed(run)
    return rate, (server_cpu(pid) - cpu) / calls


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--calls", type=int, default=1000, help="calls per kind and round")
    args.add_argument("--rounds", type=int, default=5)
    args.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    opts = args.parse_args()
    if opts.bare:
        asyncio.run(_serve_bare())
        return
    check = health_pb2.HealthCheckRequest()
    with (
        backends() as (db_url, redis_url),
        service(db_url, redis_url) as svc,
        bare_server() as (bare_address, bare_pid),
        grpc.insecure_channel(bare_address) as bare_channel,
        grpc.insecure_channel(svc.address) as channel,
    ):
        key = (("x-api-key", svc.api_key),)
        bare = health_pb2_grpc.HealthStub(bare_channel).Check
        ours = health_pb2_grpc.HealthStub(channel).Check
        memories = memory_pb2_grpc.MemoryServiceStub(channel)
        refused = memory_pb2.BatchDeleteMemoriesRequest(project_id=svc.project_id, ids=[""])
        one = memory_pb2.BatchDeleteMemoriesRequest(project_id=svc.project_id, ids=["unknown"])
        kinds: dict[str, tuple[Callable[[], object], int]] = {
            "bare grpc.aio: health check": (lambda: bare(check), bare_pid),
            "ours: health check": (lambda: ours(check), svc.pid),
            "ours: refused delete": (
                quietly(lambda: memories.BatchDeleteMemories(refused, metadata=key)),
                svc.pid,
            ),
            "ours: delete of 1 unknown id": (
                lambda: memories.BatchDeleteMemories(one, metadata=key),
                svc.pid,
            ),
        }
        rates: dict[str, list[float]] = {name: [] for name in kinds}
        cpus: dict[str, list[float]] = {name: [] for name in kinds}
        for call, _ in kinds.values():  # connections up, handlers warm
            for _ in range(50):
                call()
        for _ in range(opts.rounds):
            for name, (call, pid) in kinds.items():
                rate, cpu = per_call(call, opts.calls, pid)
                rates[name].append(rate)
                cpus[name].append(cpu)
        floor = "bare grpc.aio: health check"
        for name in list(kinds)[1:]:
            report(f"{name}, one call at a time", "calls/s", rates[name], rates[floor],
                   names=(name.split(": ")[1], "bare health"))  # fmt: skip
        print("server CPU per call:")
        for name in kinds:
            ms = statistics.median(cpus[name]) * 1e3
            print(f"  {name:32} {ms:6.3f} ms")
            record({"title": f"server CPU per call, {name}", "unit": "ms", "chart": False,
                    "value": ms, "rounds": [c * 1e3 for c in cpus[name]]})  # fmt: skip


if __name__ == "__main__":
    main()
