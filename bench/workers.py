"""`serve --workers 2` against one process: throughput of 16 concurrent callers.

Two services run at once on the same PostgreSQL and Valkey, each with a database of its own: one
with a single process, one with `--workers 2`. Sixteen callers, each on a connection of its own
(so the kernel spreads them over the workers), send BatchUpsertMemories of 100 records, built per
call; rounds alternate between the two services and medians print with their ratio. The client
shares the machine's cores with both servers, PostgreSQL and Valkey: on a 2-core machine the
ratio shows what a second worker gains when the server process, not the machine, is the limit.

    python -m bench.workers [--callers 16] [--calls 10] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg
from psycopg.conninfo import make_conninfo

from bench.harness import Service, backends, machine_busy, report, service, timed
from zerodb.v1 import memory_pb2, memory_pb2_grpc

RECORDS = 100


def caller(svc: Service, calls: int, tag: str) -> None:
    options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own
    with grpc.insecure_channel(svc.address, options=options) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        for n in range(calls):
            records = [
                memory_pb2.Memory(content=f"{tag} {n} {i}: " + "x" * 180, tags=["bench"])
                for i in range(RECORDS)
            ]
            request = memory_pb2.BatchUpsertMemoriesRequest(
                project_id=svc.project_id, records=records
            )
            stub.BatchUpsertMemories(request, metadata=(("x-api-key", svc.api_key),))


def load(
    svc: Service, callers: int, calls: int, pool: ThreadPoolExecutor, tag: str, busy: list[float]
) -> float:
    """Records/s of one round; appends the share of the machine's CPU in use during it."""

    def run() -> None:
        futures = [pool.submit(caller, svc, calls, f"{tag}-{c}") for c in range(callers)]
        for future in futures:
            future.result()

    before = machine_busy()
    rate = callers * calls * RECORDS / timed(run)
    after = machine_busy()
    busy.append((after[0] - before[0]) / (after[1] - before[1]))
    return rate


def second_database(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE zerodb_workers")
    return make_conninfo(url, dbname="zerodb_workers")


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--callers", type=int, default=16)
    args.add_argument("--calls", type=int, default=10, help="calls per caller per round")
    args.add_argument("--rounds", type=int, default=5)
    opts = args.parse_args()
    with contextlib.ExitStack() as stack:
        db_url, redis_url = stack.enter_context(backends())
        other_db = second_database(db_url)
        one = stack.enter_context(service(db_url, redis_url, ZERODB_WORKERS="1"))
        two = stack.enter_context(service(other_db, redis_url, ZERODB_WORKERS="2"))
        pool = stack.enter_context(ThreadPoolExecutor(opts.callers))
        ours, base, busy_two, busy_one = [], [], [], []
        for n in range(opts.rounds):
            base.append(load(one, opts.callers, opts.calls, pool, f"one{n}", busy_one))
            ours.append(load(two, opts.callers, opts.calls, pool, f"two{n}", busy_two))
        report(
            f"BatchUpsertMemories of {RECORDS} records, {opts.callers} concurrent callers",
            "records/s",
            ours,
            base,
            names=("--workers 2", "--workers 1"),
        )
        # A second worker can only use CPU the machine has left: with the first already taking
        # it all (with the callers and PostgreSQL), there is nothing for the second to gain.
        for name, busy in (("--workers 1", busy_one), ("--workers 2", busy_two)):
            share = statistics.median(busy)
            cores = os.cpu_count()
            print(f"  machine CPU in use during {name} rounds: {share:.0%} of {cores} cores")


if __name__ == "__main__":
    main()
