"""What metrics and logging cost: bench.memory_upsert's and bench.events_publish's service rounds
against two servers side by side, one with metrics on and a JSON log line per call (INFO), one
with metrics off and only warnings logged. Traces are off in both (their default).

Both servers share the embedded PostgreSQL and Valkey (a database each). Every caller alternates
its calls between the two (and which goes first), so both meet the same moments of a busy
machine; a side's rate is its work over the time its calls took; medians of the rounds print with
their ratio. The server with logs writes them to a file, as a
deployment would. Throughput on a shared 2-core machine is noisy, so the servers' own CPU time per
call (from /proc) prints too: it is what the instrumentation adds to, and what limits throughput
when the machine is busy. First, in this process, what the instrumentation of one call costs by
itself: the interceptor's part (start, sizes, finish with its log line in JSON to /dev/null) and
the per-item results' part, with metrics on and off.

    python -m bench.observability [--calls 40] [--rounds 9] [--callers 4]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable

import grpc

from bench import events_publish, memory_upsert
from bench.harness import Service, backends, record, report, service
from bench.memory_stream import server_cpu
from zerodb.v1 import event_pb2_grpc, memory_pb2, memory_pb2_grpc
from zerodb_batch.observability import calls, logs
from zerodb_batch.observability.calls import Observer
from zerodb_batch.observability.metrics import Metrics
from zerodb_batch.observability.tracing import Tracing

OBSERVED = {"ZERODB_METRICS": "on", "ZERODB_LOG_LEVEL": "INFO", "ZERODB_LOG_FORMAT": "json"}
QUIET = {"ZERODB_METRICS": "off", "ZERODB_LOG_LEVEL": "WARNING"}
NAMES = ("metrics+logs on", "off")
CONTROL = ("server A, off", "server B, off")


def instrumented_calls(metrics: Metrics | None, count: int) -> float:
    """Seconds per call of what the interceptor and results.fill add to a 500-item upsert."""
    site = Observer(metrics, Tracing(None)).site("/zerodb.v1.MemoryService/BatchUpsertMemories")
    metadata = {"x-api-key": "zdb_k", "user-agent": "grpc-python/1.85"}
    rpc_log = logging.getLogger("zerodb_batch.rpc")
    start = time.perf_counter()
    for n in range(count):
        site.received(120_000)
        call = site.start(metadata, f"{n:016x}")
        call.project = "6f1c0e0a-5b1e-4c1e-9d59-1a2b3c4d5e6f"
        calls.record_items(500, {"inserted": 250, "updated": 250})
        site.sent(30_000)
        fields = call.finish(0, "OK", None)
        rpc_log.info("rpc %s code=%s ms=%.1f request_id=%s", call.site.method, "OK",
                     fields["duration_ms"], call.request_id, extra=fields)  # fmt: skip
    return (time.perf_counter() - start) / count


def instrumentation(count: int = 20_000) -> None:
    with open(os.devnull, "w") as devnull:
        handler = logging.StreamHandler(devnull)
        handler.setFormatter(logs.json_formatter())
        logging.basicConfig(level="INFO", handlers=[handler], force=True)
        on = min(instrumented_calls(Metrics(), count) for _ in range(3))
        logging.getLogger().setLevel("WARNING")
        off = min(instrumented_calls(None, count) for _ in range(3))
    print("Instrumentation of one call, in-process (best of 3)")
    print(f"  metrics+logs on: {on * 1e6:6.1f} µs   off: {off * 1e6:6.1f} µs")
    record({"title": "Instrumentation of one call, in-process", "unit": "µs",
            "names": NAMES, "ours": on * 1e6, "raw": off * 1e6, "ratio": on / off,
            "chart": False})  # fmt: skip


class Side:
    """One server: its call for the n-th unit of work, and what its calls took in each round."""

    def __init__(
        self,
        svc: Service,
        call: Callable[[int], None],
        units: int,
        prepare: Callable[[], None] = lambda: None,
    ) -> None:
        self.pid = svc.pid
        self.call = call
        self.units = units  # per call: 1 upsert, or 100 events
        self.prepare = prepare  # before each round, outside the timing
        self.busy = 0.0  # seconds spent in this side's calls this round, all callers together
        self.rates: list[float] = []
        self.cpu: list[float] = []  # the server's CPU seconds per call, per round
        self._lock = threading.Lock()

    def timed(self, n: int) -> None:
        start = time.perf_counter()
        self.call(n)
        with self._lock:
            self.busy += time.perf_counter() - start


def upserts(svc: Service, channel: grpc.Channel, calls: int) -> Side:
    """500-record upserts, half existing; each round's messages are built before it starts."""
    stub = memory_pb2_grpc.MemoryServiceStub(channel)
    auth = (("x-api-key", svc.api_key),)
    requests: list[memory_pb2.BatchUpsertMemoriesRequest] = []

    def prepare() -> None:
        batches = memory_upsert.batches(calls)
        requests[:] = [memory_upsert.to_request(svc.project_id, b) for b in batches]

    return Side(svc, lambda n: stub.BatchUpsertMemories(requests[n], metadata=auth), 1, prepare)


def publishes(svc: Service, channel: grpc.Channel) -> Side:
    """100-event publishes to one project; each request is built in its call, as a client's."""
    stub = event_pb2_grpc.EventServiceStub(channel)
    auth = (("x-api-key", svc.api_key),)

    def call(n: int) -> None:
        stub.BatchPublishEvents(events_publish.to_request(svc.project_id, n), metadata=auth)

    return Side(svc, call, events_publish.BATCH)


def paired(sides: tuple[Side, Side], callers: int, calls: int, rounds: int) -> None:
    """Rounds in which every caller alternates its calls between the two servers (which goes
    first alternates too), so both meet the same moments of a busy machine."""

    def caller(k: int) -> None:
        for c in range(calls):
            for side in sides if (k + c) % 2 == 0 else sides[::-1]:
                side.timed(k * calls + c)

    for n in range(rounds + 1):  # the first round warms up: connections, prepared statements
        for side in sides:
            side.prepare()
            side.busy = 0.0
        cpu = [server_cpu(side.pid) for side in sides]
        events_publish.concurrently(callers, caller)
        if n == 0:
            continue
        for side, before in zip(sides, cpu, strict=True):
            # Its callers spent busy / callers seconds each in its calls: its rate alone.
            side.rates.append(callers * calls * side.units / (side.busy / callers))
            side.cpu.append((server_cpu(side.pid) - before) / (callers * calls))


def compare(title: str, unit: str, on: Side, off: Side, names: tuple[str, str]) -> None:
    bench = "observability_control" if names is CONTROL else "observability"
    report(title, unit, on.rates, off.rates, names, bench)
    a, b = statistics.median(on.cpu), statistics.median(off.cpu)
    print(f"  server CPU per call: {names[0]} {a * 1e6:.0f} µs, {names[1]} {b * 1e6:.0f} µs, "
          f"ratio {a / b:.3f}")  # fmt: skip
    record({"title": f"{title}: server CPU per call", "unit": "CPU µs per call",
            "names": names, "ours": a * 1e6, "raw": b * 1e6, "ratio": a / b,
            "chart": False}, bench)  # fmt: skip


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--calls", type=int, default=40, help="calls per round (per caller)")
    args.add_argument("--rounds", type=int, default=9)
    args.add_argument("--callers", type=int, default=4, help="concurrent publishers")
    args.add_argument(
        "--control", action="store_true",
        help="an A/A run: both servers with metrics off and warnings only (the ratios' noise)",
    )  # fmt: skip
    opts = args.parse_args()
    observed, names = (QUIET, CONTROL) if opts.control else (OBSERVED, NAMES)
    if not opts.control:
        instrumentation()
    with (
        backends() as (db_url, redis_url),
        tempfile.TemporaryFile("w+") as log,
        service(db_url, redis_url, log=log, **observed) as on,
        service(events_publish.raw_database(db_url, "zerodb_off"), redis_url, **QUIET) as off,
        grpc.insecure_channel(on.address) as on_channel,
        grpc.insecure_channel(off.address) as off_channel,
    ):
        sides = (upserts(on, on_channel, opts.calls), upserts(off, off_channel, opts.calls))
        paired(sides, 1, opts.calls, opts.rounds)
        compare(f"BatchUpsertMemories, {memory_upsert.BATCH} records a call (half existing)",
                "calls/s", *sides, names)  # fmt: skip
        sides = (publishes(on, on_channel), publishes(off, off_channel))
        paired(sides, opts.callers, opts.calls // 2, opts.rounds)
        compare(f"BatchPublishEvents, {events_publish.BATCH} events a call, {opts.callers} "
                "concurrent callers, one project", "events/s", *sides, names)  # fmt: skip
        log.seek(0)
        print(f"  (the observed server logged {sum(1 for _ in log)} lines)")


if __name__ == "__main__":
    main()
