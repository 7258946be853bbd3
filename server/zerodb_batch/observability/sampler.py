"""The gauges that are states rather than events: pools, health, relay lag, consumer groups.

They are read every `interval` seconds, and again when /metrics is scraped so that the scraped
process answers with fresh values (in multiprocess mode, the others' are at most `interval` old).
The relay lag is one query on the outbox per sample, never work per publish. A sample that needs
PostgreSQL or Redis while it is slow is not cancelled (cancelling a stuck query costs more): a
scrape waits for it briefly and otherwise shows the previous values; the next sample starts once
it has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from prometheus_client import ProcessCollector

from zerodb_batch.observability.metrics import Metrics

log = logging.getLogger(__name__)

SCRAPE_WAIT = 1.0  # seconds a scrape waits for a fresh sample before showing the last one
# psycopg_pool's cumulative statistics and the counters they feed (milliseconds become seconds).
_POOL_COUNTERS = (
    ("requests_num", "db_requests", 1.0),
    ("requests_queued", "db_queued", 1.0),
    ("requests_wait_ms", "db_wait", 0.001),
    ("requests_errors", "db_timeouts", 1.0),
    ("connections_lost", "db_lost", 1.0),
)


@dataclass(frozen=True)
class Sources:
    """What the sampler reads, handed in by app.py: nothing here knows the drivers."""

    db_pool: Callable[[], Mapping[str, int]]  # psycopg_pool's get_stats()
    redis_pools: Mapping[str, Callable[[], tuple[int, int, int]]]  # name -> (idle, in use, max)
    health: Callable[[], Mapping[str, bool]]  # dependency -> up
    relay_lag: Callable[[], Awaitable[tuple[int, float]]]  # (events waiting, oldest age in s)
    group_pending: Callable[[], Awaitable[int]]  # most unacknowledged in a group read here


class Sampler:
    """Keeps the state gauges of one server current (`run` is a background task)."""

    def __init__(self, metrics: Metrics, sources: Sources, interval: float) -> None:
        self._metrics = metrics
        self._sources = sources
        self._interval = interval
        self._pool_seen: dict[str, int] = {}
        self._reading: asyncio.Task[None] | None = None
        self._process = ProcessCollector(registry=None) if metrics.process else None

    async def run(self) -> None:
        try:
            while True:
                await self.fresh(wait=None)
                await asyncio.sleep(self._interval)
        finally:
            if self._reading is not None:
                self._reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._reading

    async def fresh(self, wait: float | None = SCRAPE_WAIT) -> None:
        """Sample now; wait for the parts that need I/O at most `wait` seconds (None: until
        they end)."""
        self._sample_local()
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._sample_remote())
        await asyncio.wait({self._reading}, timeout=wait)

    def _sample_local(self) -> None:
        m, stats = self._metrics, self._sources.db_pool()
        m.db_connections.labels("in_use").set(stats["pool_size"] - stats["pool_available"])
        m.db_connections.labels("idle").set(stats["pool_available"])
        m.db_max.set(stats["pool_max"])
        m.db_waiting.set(stats.get("requests_waiting", 0))
        for key, counter, scale in _POOL_COUNTERS:
            total, seen = stats.get(key, 0), self._pool_seen.get(key, 0)
            getattr(m, counter).inc((total - seen if total >= seen else total) * scale)
            self._pool_seen[key] = total
        for name, counts in self._sources.redis_pools.items():
            idle, in_use, most = counts()
            m.redis_connections.labels(name, "idle").set(idle)
            m.redis_connections.labels(name, "in_use").set(in_use)
            m.redis_max.labels(name).set(most)
        for dependency, up in self._sources.health().items():
            m.dependency_up.labels(dependency).set(1 if up else 0)
        self._sample_process()

    def _sample_process(self) -> None:
        """Multiprocess mode: this process's own collector, copied into gauges by pid."""
        if self._process is None:
            return
        gauges = self._metrics.process
        for family in self._process.collect():
            for sample in family.samples:
                if (gauge := gauges.get(sample.name)) is not None:
                    gauge.set(sample.value)

    async def _sample_remote(self) -> None:
        """The gauges that need a query; skipped (keeping their last values) while the health
        monitor finds their dependency away, so that a scrape adds no waits to an outage."""
        up = self._sources.health()
        try:
            if up.get("postgres", True):
                waiting, age = await self._sources.relay_lag()
                self._metrics.outbox_pending.set(waiting)
                self._metrics.outbox_oldest_age.set(age)
        except Exception as e:  # went away meanwhile: the health gauge will say so
            log.debug("relay lag not sampled: %s", e)
        try:
            if up.get("redis", True):
                self._metrics.group_pending.set(await self._sources.group_pending())
        except Exception as e:
            log.debug("consumer group pending counts not sampled: %s", e)
