"""Wiring of what an operator sees of a server: traces, metrics and where their values come from.

`Observing.begin` comes before the pool opens (the drivers are instrumented for traces before
their first connection); `serve` once the pool, the Redis clients, the monitor and the event
service exist, because the sampler reads them; `close` after the server has stopped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from zerodb_batch.api.event_service import EventServicer
from zerodb_batch.config import Observability
from zerodb_batch.events.streams import Streams, trace_commands
from zerodb_batch.http.door import Handler
from zerodb_batch.http.metrics import MetricsListener, metrics_handler
from zerodb_batch.monitor import DependencyMonitor
from zerodb_batch.observability.calls import Observer
from zerodb_batch.observability.exposition import Exposition
from zerodb_batch.observability.metrics import Metrics
from zerodb_batch.observability.sampler import Sampler, Sources
from zerodb_batch.observability.tracing import Tracing
from zerodb_batch.storage import outbox
from zerodb_batch.storage.pool import Database, trace_statements


@dataclass
class Observing:
    """One server's observability: `observer` for the interceptor, the rest for /metrics."""

    settings: Observability
    observer: Observer
    sampler: Sampler | None = None  # its run() is a background task of the server
    exposition: Exposition | None = None
    listener: MetricsListener | None = None  # /metrics on a port of its own

    @classmethod
    def begin(cls, settings: Observability) -> Observing:
        tracing = Tracing.start(settings.trace_exporters)
        if (provider := tracing.inside_traces) is not None:
            trace_statements(provider)
            trace_commands(provider)
        metrics = None
        if settings.metrics:
            metrics = Metrics(
                project_label=settings.metrics_project_label,
                multiprocess_dir=settings.multiprocess_dir,
            )
        return cls(settings, Observer(metrics, tracing))

    @property
    def metrics(self) -> Metrics | None:
        return self.observer.metrics

    async def serve(self, sources: Sources) -> None:
        """Sample the state gauges from `sources`, and serve /metrics apart if asked to."""
        if self.metrics is None:
            return
        self.sampler = Sampler(self.metrics, sources, self.settings.metrics_sample_seconds)
        self.exposition = Exposition(self.metrics, self.sampler)
        if self.settings.metrics_served_apart:
            self.listener = await MetricsListener.start(
                self.settings.metrics_listen, self.exposition
            )

    @property
    def route(self) -> Handler | None:
        """GET /metrics for the HTTP door (None while metrics are off)."""
        return metrics_handler(self.exposition) if self.exposition else None

    async def close(self) -> None:
        if self.listener is not None:
            await self.listener.close()
        if self.metrics is not None:
            self.metrics.close()
        await asyncio.to_thread(self.observer.tracing.flush)


def sources(
    db: Database,
    streams: Streams,
    relay_streams: Streams,
    monitor: DependencyMonitor,
    events: EventServicer,
) -> Sources:
    async def relay_lag() -> tuple[int, float]:
        async with db.pipelined_transaction() as conn:  # one round trip with its lock timeout
            return await outbox.backlog(conn)

    return Sources(
        db_pool=db.stats,
        redis_pools={
            "subscribe": streams.connection_counts,
            "publish": relay_streams.connection_counts,
        },
        health=lambda: {"postgres": monitor.postgres_up, "redis": monitor.redis_up},
        relay_lag=relay_lag,
        group_pending=events.group_pending_max,
    )
