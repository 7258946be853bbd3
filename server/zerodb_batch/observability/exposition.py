"""A scrape: fresh state gauges, then the metrics in the format the scraper asks for."""

from __future__ import annotations

import asyncio

from prometheus_client.exposition import choose_encoder

from zerodb_batch.observability.metrics import Metrics
from zerodb_batch.observability.sampler import Sampler


class Exposition:
    """What GET /metrics answers, wherever it is served."""

    def __init__(self, metrics: Metrics, sampler: Sampler) -> None:
        self.metrics = metrics
        self.sampler = sampler

    async def scrape(self, accept: str) -> tuple[bytes, str]:
        """The body and its content type: Prometheus text, or OpenMetrics if `accept` asks."""
        await self.sampler.fresh()
        encode, content_type = choose_encoder(accept)
        # In a thread: a large registry (or multiprocess mode's files) takes milliseconds.
        body = await asyncio.to_thread(encode, self.metrics.scrape_registry())
        return body, content_type
