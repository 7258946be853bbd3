"""Every metric of the server, defined once, with label sets that stay bounded.

A server's metrics live in a registry of its own (tests run several servers in one process). With
`PROMETHEUS_MULTIPROC_DIR` set, prometheus_client's multiprocess mode is on: every process writes
its values to files in that directory and a scrape of any process adds up all of them, so the
gauges say how processes combine (`livesum`: the sum over live processes; `livemin`; ...).

Labels never carry project or load ids, with one opt-in: `project_label` adds a `project` label
to the per-RPC call and item counters (one series per project, method and code: the cost grows
with the number of projects; see the README).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    multiprocess,
)

NAMESPACE: Final = "zerodb"
# From a 1 ms read to a streamed load of minutes.
LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
SIZE_BUCKETS: Final = tuple(float(64 * 4**k) for k in range(11))  # 64 B to 64 MiB, x4
ITEM_BUCKETS: Final = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0)

# A `_created` series beside every counter and histogram would double the scrape for a time
# that Prometheus itself does not use.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """The metrics of one server. `rpc(method)` and `load(kind)` give their bound children."""

    def __init__(self, *, project_label: bool = False, multiprocess_dir: Path | None = None):
        self.project_label = project_label
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        self._target = None if multiprocess_dir else self.registry
        self._rpcs: dict[str, Rpc] = {}
        self._loads: dict[str, Load] = {}
        self._define_rpc()
        self._define_loads()
        self._define_events()
        self._define_pools()
        self._define_process()

    def _counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, doc, labels, namespace=NAMESPACE, registry=self._target)

    def _gauge(self, name: str, doc: str, labels: tuple[str, ...] = (), mode: str = "livesum"
               ) -> Gauge:  # fmt: skip
        return Gauge(
            name, doc, labels, namespace=NAMESPACE, registry=self._target,
            multiprocess_mode=mode,  # type: ignore[arg-type]  # one of the literal modes
        )  # fmt: skip

    def _histogram(
        self, name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]
    ) -> Histogram:
        return Histogram(
            name, doc, labels, namespace=NAMESPACE, registry=self._target, buckets=buckets
        )

    def _define_rpc(self) -> None:
        rpc, project = ("service", "method"), ("project",) if self.project_label else ()
        self.rpc_calls = self._counter(
            "rpc_calls", "Finished calls by status code", (*rpc, "code", *project)
        )
        self.rpc_duration = self._histogram(
            "rpc_duration_seconds", "Time from a call's start to its status, by status code",
            (*rpc, "code"), LATENCY_BUCKETS,
        )  # fmt: skip
        self.rpc_in_flight = self._gauge("rpc_in_flight", "Calls running now", rpc)
        self.rpc_request_bytes = self._histogram(
            "rpc_request_bytes", "Size of each request message received", rpc, SIZE_BUCKETS
        )
        self.rpc_response_bytes = self._histogram(
            "rpc_response_bytes", "Size of each response message sent", rpc, SIZE_BUCKETS
        )
        self.rpc_batch_items = self._histogram(
            "rpc_batch_items", "Items in each write batch", rpc, ITEM_BUCKETS
        )
        self.rpc_items = self._counter(
            "rpc_items", "Items of write batches by outcome (inserted, updated, failed, ...)",
            (*rpc, "outcome", *project),
        )  # fmt: skip

    def _define_loads(self) -> None:
        kind = ("kind",)
        self.load_records = self._counter(
            "load_records_committed", "Records written by committed chunks of streamed loads", kind
        )
        self.load_records_failed = self._counter(
            "load_records_failed", "Records refused in committed chunks (partial_success)", kind
        )
        self.load_chunks = self._counter(
            "load_chunks_committed", "Chunks of streamed loads committed", kind
        )
        self.load_chunks_skipped = self._counter(
            "load_chunks_skipped", "Chunks already committed, resent by a resumed stream", kind
        )
        self.load_streams = self._gauge("load_streams_running", "Streamed loads running", kind)

    def _define_events(self) -> None:
        self.outbox_pending = self._gauge(
            "event_outbox_pending", "Events committed but not yet appended to their Redis stream",
            mode="livemostrecent",
        )  # fmt: skip
        self.outbox_oldest_age = self._gauge(
            "event_outbox_oldest_age_seconds",
            "Age of the oldest event waiting for the relay (0 when none waits): the relay lag",
            mode="livemostrecent",
        )
        self.relay_batches = self._counter(
            "event_relay_batches", "XADD pipelines sent to Redis, by who sent them", ("path",)
        )
        self.relayed = self._counter(
            "event_relayed", "Events appended to Redis streams, by who appended them", ("path",)
        )
        self.relay_failures = self._counter(
            "event_relay_failures",
            "Relay attempts that failed (unavailable: a dependency down; error: anything else)",
            ("path", "reason"),
        )
        self.subscriptions = self._gauge(
            "event_subscriptions_open", "SubscribeEvents calls open, tail or consumer group",
            ("mode",),
        )  # fmt: skip
        self.group_pending = self._gauge(
            "event_group_pending_max",
            "Most entries delivered and not acknowledged in any consumer group read here",
            mode="livemax",
        )

    def _define_pools(self) -> None:
        self.db_connections = self._gauge(
            "db_pool_connections", "PostgreSQL pool connections, idle or in use", ("state",)
        )
        self.db_max = self._gauge("db_pool_max", "Most connections the PostgreSQL pool may open")
        self.db_waiting = self._gauge(
            "db_pool_waiting", "Requests waiting now for a PostgreSQL connection"
        )
        self.db_requests = self._counter("db_pool_requests", "Connections asked of the pool")
        self.db_queued = self._counter(
            "db_pool_requests_queued", "Connection requests that had to wait"
        )
        self.db_wait = self._counter(
            "db_pool_wait_seconds", "Time spent waiting for a connection, summed"
        )
        self.db_timeouts = self._counter(
            "db_pool_timeouts", "Connection requests that timed out (answered UNAVAILABLE)"
        )
        self.db_lost = self._counter("db_pool_connections_lost", "Pool connections found broken")
        self.redis_connections = self._gauge(
            "redis_pool_connections", "Redis connections, idle or in use", ("pool", "state")
        )
        self.redis_max = self._gauge("redis_pool_max", "Most connections per Redis pool", ("pool",))
        self.dependency_up = self._gauge(
            "dependency_up", "1 while the dependency answers its health probe, else 0",
            ("dependency",), mode="livemin",
        )  # fmt: skip

    def _define_process(self) -> None:
        """prometheus_client's own collectors; in multiprocess mode, where collectors see only
        the scraped process, the sampler copies them into gauges labelled by pid instead."""
        if self.multiprocess_dir is None:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            self.registry.register(GC_COLLECTOR)
            self.process: dict[str, Gauge] = {}
            return
        self.process = {
            name: Gauge(name, doc, registry=None, multiprocess_mode="liveall")
            for name, doc in (
                ("process_resident_memory_bytes", "Resident memory size in bytes"),
                ("process_virtual_memory_bytes", "Virtual memory size in bytes"),
                ("process_cpu_seconds_total", "User and system CPU time in seconds"),
                ("process_open_fds", "Open file descriptors"),
                ("process_start_time_seconds", "Start time of the process (Unix time)"),
            )
        }

    def rpc(self, method: str) -> Rpc:
        """The bound metrics of `method` (`/package.Service/Method`), made once."""
        found = self._rpcs.get(method)
        if found is None:
            found = self._rpcs[method] = Rpc(self, method)
        return found

    def load(self, kind: str) -> Load:
        found = self._loads.get(kind)
        if found is None:
            found = self._loads[kind] = Load(self, kind)
        return found

    def scrape_registry(self) -> CollectorRegistry:
        """What /metrics shows: this server's registry, or every process's files added up."""
        if self.multiprocess_dir is None:
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            registry, path=str(self.multiprocess_dir)
        )
        return registry

    def close(self) -> None:
        """Forget this process's live gauges (in multiprocess mode: its share of the sums)."""
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                os.getpid(), str(self.multiprocess_dir)
            )


class Rpc:
    """One RPC method's metrics with its labels bound, so a call costs no label lookups."""

    __slots__ = (
        "_calls", "_durations", "_items", "_metrics", "batch_items", "in_flight", "labels",
        "request_bytes", "response_bytes",
    )  # fmt: skip

    def __init__(self, metrics: Metrics, method: str) -> None:
        service, _, name = method.lstrip("/").rpartition("/")
        self._metrics = metrics
        self.labels = (service, name)
        self.in_flight = metrics.rpc_in_flight.labels(*self.labels)
        self.request_bytes = metrics.rpc_request_bytes.labels(*self.labels)
        self.response_bytes = metrics.rpc_response_bytes.labels(*self.labels)
        self.batch_items = metrics.rpc_batch_items.labels(*self.labels)
        self._calls: dict[tuple[str, ...], Counter] = {}
        self._durations: dict[str, Histogram] = {}
        self._items: dict[tuple[str, ...], Counter] = {}

    def _key(self, value: str, project: str | None) -> tuple[str, ...]:
        return (value, project or "") if self._metrics.project_label else (value,)

    def finished(self, code: str, seconds: float, project: str | None) -> None:
        key = self._key(code, project)
        counter = self._calls.get(key)
        if counter is None:
            counter = self._calls[key] = self._metrics.rpc_calls.labels(*self.labels, *key)
        counter.inc()
        histogram = self._durations.get(code)
        if histogram is None:
            histogram = self._durations[code] = self._metrics.rpc_duration.labels(
                *self.labels, code
            )
        histogram.observe(seconds)

    def items(self, total: int, outcomes: Mapping[str, int], project: str | None) -> None:
        """A write batch of `total` items; `outcomes` counts them by outcome name."""
        self.batch_items.observe(total)
        for outcome, count in outcomes.items():
            key = self._key(outcome, project)
            counter = self._items.get(key)
            if counter is None:
                counter = self._items[key] = self._metrics.rpc_items.labels(*self.labels, *key)
            counter.inc(count)


class Load:
    """One kind of streamed load's metrics, bound."""

    __slots__ = ("chunks", "failed", "records", "running", "skipped")

    def __init__(self, metrics: Metrics, kind: str) -> None:
        self.records = metrics.load_records.labels(kind)
        self.failed = metrics.load_records_failed.labels(kind)
        self.chunks = metrics.load_chunks.labels(kind)
        self.skipped = metrics.load_chunks_skipped.labels(kind)
        self.running = metrics.load_streams.labels(kind)


def clear_process_files(directory: Path) -> None:
    """Empty a multiprocess directory: what the processes of an earlier run left behind (a
    killed one's live gauges). Only as the whole service starts (`serve --workers`' parent)."""
    for path in directory.glob("*.db"):
        path.unlink(missing_ok=True)


def process_dead(directory: Path, pid: int) -> None:
    """Forget the live gauges of a worker that died without closing its metrics."""
    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
