"""Overload: N concurrent asyncio clients across the RPCs, below and at 4x the server's cap.

Each client calls, in turn, BatchUpsertMemories (10 records), ListMemories, BatchPublishEvents
(10 events), BatchCreateInteractions (10 interactions) and a one-operation BatchQuery, until
the run's fixed count of calls is done; every call has a 10 s deadline. A client refused with
RESOURCE_EXHAUSTED waits the RetryInfo delay before its next call (as a well-behaved client
does) and the refusal is counted, not retried. Two runs against one server, whose cap of
concurrent calls is `--cap` (ZERODB_MAX_CONCURRENT_CALLS), then one run against a server without
a cap (on backends of its own), for comparison:

- below the cap (cap / 2 clients): expect zero errors;
- 4x the cap (4 * cap clients): expect RESOURCE_EXHAUSTED, no DEADLINE_EXCEEDED, and the
  server's RSS (VmRSS, /proc/PID/status) no higher than a bounded margin over the first run;
- 4x, no cap: the same clients against a server that queues them all.

Printed: calls/s (and OK calls/s), p50 / p99 latency of the OK calls, statuses by count, and
the server's RSS before and after.

    python -m bench.load [--cap 16] [--calls 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bench.harness import Rss, Service, backends, record, service
from zerodb.v1 import (
    event_pb2,
    event_pb2_grpc,
    memory_pb2,
    memory_pb2_grpc,
    rlhf_pb2,
    rlhf_pb2_grpc,
    table_pb2,
    table_pb2_grpc,
)

DEADLINE = 10.0
TABLE = "load_bench"
Call = Callable[[int], Awaitable[object]]


@dataclass
class Tally:
    """What one run's calls answered and how long the OK ones took."""

    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        done = sum(self.statuses.values())
        ms = sorted(x * 1000 for x in self.latencies) or [0.0]
        p50, p99 = statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        ok = self.statuses["OK"]
        rates = f"{done / self.seconds:5.0f} calls/s ({ok / self.seconds:4.0f} OK/s)"
        times = f"OK p50 {p50:5.1f} ms p99 {p99:6.1f} ms"
        return f"{rates}  {times}  {dict(self.statuses.most_common())}"


def calls(channel: grpc.aio.Channel, svc: Service) -> list[Call]:
    """One closure per RPC of the mix; `n` varies the content."""
    project, auth = svc.project_id, (("x-api-key", svc.api_key),)
    memories = memory_pb2_grpc.MemoryServiceStub(channel)
    events = event_pb2_grpc.EventServiceStub(channel)
    rlhf = rlhf_pb2_grpc.RlhfServiceStub(channel)
    tables = table_pb2_grpc.TableServiceStub(channel)

    def upsert(n: int) -> Awaitable[object]:
        records = [memory_pb2.Memory(content=f"note {n}-{i}", tags=["load"]) for i in range(10)]
        request = memory_pb2.BatchUpsertMemoriesRequest(project_id=project, records=records)
        return memories.BatchUpsertMemories(request, metadata=auth, timeout=DEADLINE)

    def list_(n: int) -> Awaitable[object]:
        request = memory_pb2.ListMemoriesRequest(project_id=project, page_size=20)
        return memories.ListMemories(request, metadata=auth, timeout=DEADLINE)

    def publish(n: int) -> Awaitable[object]:
        request = event_pb2.BatchPublishEventsRequest(project_id=project)
        for i in range(10):
            request.events.add(topic="agent.task.done").event_payload.update({"n": n, "i": i})
        return events.BatchPublishEvents(request, metadata=auth, timeout=DEADLINE)

    def log(n: int) -> Awaitable[object]:
        request = rlhf_pb2.BatchCreateInteractionsRequest(project_id=project)
        for i in range(10):
            request.interactions.add(prompt=f"q {n}-{i}", response="a", feedback="positive")
        return rlhf.BatchCreateInteractions(request, metadata=auth, timeout=DEADLINE)

    def query(n: int) -> Awaitable[object]:
        request = table_pb2.BatchQueryRequest(project_id=project)
        request.operations.add(table=TABLE, limit=10).filters.update({"k": n % 50})
        return tables.BatchQuery(request, metadata=auth, timeout=DEADLINE)

    return [upsert, list_, publish, log, query]


def retry_after(err: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToMilliseconds()) / 1000
    return 0.0


async def run(svc: Service, clients: int, total: int) -> Tally:
    tally, numbers = Tally(), itertools.count()
    async with grpc.aio.insecure_channel(svc.address) as channel:
        mix = calls(channel, svc)

        async def client() -> None:
            while (n := next(numbers)) < total:
                start = time.perf_counter()
                try:
                    await mix[n % len(mix)](n)
                except grpc.aio.AioRpcError as e:
                    tally.statuses[e.code().name] += 1
                    if e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                        await asyncio.sleep(retry_after(e))
                    continue
                tally.latencies.append(time.perf_counter() - start)
                tally.statuses["OK"] += 1

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        tally.seconds = time.perf_counter() - start
    return tally


async def prepare(svc: Service) -> None:
    async with grpc.aio.insecure_channel(svc.address) as channel:
        request = table_pb2.CreateTableRequest(project_id=svc.project_id, name=TABLE)
        await table_pb2_grpc.TableServiceStub(channel).CreateTable(
            request, metadata=(("x-api-key", svc.api_key),)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=int, default=16, help="ZERODB_MAX_CONCURRENT_CALLS")
    parser.add_argument("--calls", type=int, default=1500, help="calls per run")
    args = parser.parse_args()
    runs = (("below the cap", args.cap // 2, args.cap), ("4x the cap", 4 * args.cap, args.cap),
            ("4x, no cap", 4 * args.cap, 100_000))  # fmt: skip
    results, rss = {}, {}
    for cap in (args.cap, 100_000):
        with (
            backends() as (database_url, redis_url),
            service(database_url, redis_url, ZERODB_MAX_CONCURRENT_CALLS=str(cap)) as svc,
        ):
            asyncio.run(prepare(svc))
            rss[cap] = Rss(svc.pid)
            rss[cap].sample("start")
            for label, clients, _ in [r for r in runs if r[2] == cap]:
                tally = asyncio.run(run(svc, clients, args.calls))
                rss[cap].sample(f"after {label}")
                print(f"{label:>14} ({clients:3} clients, cap {cap}): {tally.line()}")
                results[label] = tally
            rss[cap].report()
    # Not a ratio of two paths: kept out of bench.report's chart.
    record({"title": f"overload, cap {args.cap}, {args.calls} calls a run", "chart": False,
            "statuses": {k: dict(t.statuses) for k, t in results.items()},
            "calls_per_s": {k: sum(t.statuses.values()) / t.seconds for k, t in results.items()},
            "ok_per_s": {k: t.statuses["OK"] / t.seconds for k, t in results.items()},
            "rss_kb": {f"{cap}: {k}": v[0] for cap, r in rss.items()
                       for k, v in r.samples.items()}})  # fmt: skip
    below, over = results["below the cap"], results["4x the cap"]
    assert set(below.statuses) == {"OK"}, f"errors below the cap: {below.statuses}"
    assert "DEADLINE_EXCEEDED" not in over.statuses, "timeouts under overload"


if __name__ == "__main__":
    main()
