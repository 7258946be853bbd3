"""Admission under overload: a cap on the calls a server runs at once, and a per-project rate.

Above either, a call is refused at once with RESOURCE_EXHAUSTED and `google.rpc.RetryInfo`, rather
than queueing for a pooled connection until it times out: a client told to come back later can
spread its retries, while one left waiting holds memory and a socket and learns nothing.
Subscriptions (server streams) are not counted: they last as long as their client wants and have
their own cap (ZERODB_MAX_SUBSCRIPTIONS). Health checks and reflection are never refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from zerodb_batch.errors import Overloaded
from zerodb_batch.events.rate_limit import ProjectRateLimit

# What a refused client is told to wait: long enough for a few calls of ~10 ms to finish.
BUSY_RETRY_SECONDS = 0.1


class Admission:
    """Counts the calls running on this server and asks the project's rate limit."""

    def __init__(self, max_calls: int, rate: ProjectRateLimit | None = None) -> None:
        self.max_calls = max_calls
        self.running = 0
        self._rate = rate

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the server's `max_calls` slots for the duration of a call."""
        if self.running >= self.max_calls:
            raise Overloaded(
                f"the server is running its maximum of {self.max_calls} calls; retry shortly",
                reason="SERVER_BUSY",
                retry_after=BUSY_RETRY_SECONDS,
                max_concurrent_calls=self.max_calls,
            )
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1

    async def check_rate(self, project: str) -> None:
        """Refuse the call if `project` is past its calls per second (no limit when unset)."""
        if self._rate is None:
            return
        verdict = await self._rate.check(project)
        if not verdict.allowed:
            raise Overloaded(
                f"project {project!r} is past its {self._rate.per_second} calls per second; "
                f"retry in {verdict.retry_after:.3f} s",
                reason="RATE_LIMITED",
                retry_after=verdict.retry_after,
                calls_per_second=self._rate.per_second,
            )

    async def close(self) -> None:
        if self._rate is not None:
            await self._rate.close()
