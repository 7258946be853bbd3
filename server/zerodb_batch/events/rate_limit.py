"""Calls per second per project, counted in Redis so that every replica shares one budget.

A fixed one-second window: one Lua script (one round trip) increments the project's counter for
the current window, sets its expiry on first use, and returns the count and the window's time
left, which becomes the caller's `RetryInfo`. A fixed window lets a project send up to twice its
rate across a window boundary; a token bucket would not, at the cost of a longer script and
float state per project: the cap is about protecting the servers, not exact billing.

If Redis cannot be reached the limit **fails open**: calls go on unlimited (availability over
limiting; the concurrent-call cap of each server still holds), Redis is not asked again for
`RETRY_SECONDS`, and a warning is logged once per outage.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis.asyncio as aredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0  # after a failure, calls pass unchecked this long before Redis is asked again
SOCKET_TIMEOUT = 0.25  # a Redis that hangs must not hold every call up for long
WINDOW_MS = 1000
# KEYS[1]: the window's counter. ARGV[1]: the window length in ms. Returns {count, ms left}.
_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
"""


@dataclass(frozen=True)
class Verdict:
    """Whether a call may go on; if not, how long until the project's window resets."""

    allowed: bool
    retry_after: float = 0.0


class ProjectRateLimit:
    """At most `per_second` calls a second for each project, across every server."""

    def __init__(self, url: str, per_second: int) -> None:
        self.per_second = per_second
        self._client = aredis.Redis.from_url(
            url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
        )
        self._script = self._client.register_script(_SCRIPT)
        self._skip_until = 0.0

    async def check(self, project: str) -> Verdict:
        if time.monotonic() < self._skip_until:
            return Verdict(True)
        window = int(time.time() * 1000) // WINDOW_MS
        # The project's hash tag keeps its counter on the node of its stream in a Cluster.
        key = f"zerodb:{{{project}}}:calls:{window}"
        try:
            count, left_ms = await self._script(keys=[key], args=[WINDOW_MS])
        except (RedisError, OSError) as e:
            if not self._skip_until:
                log.warning("project rate limit off while Redis is unreachable: %s", e)
            self._skip_until = time.monotonic() + RETRY_SECONDS
            return Verdict(True)
        if self._skip_until:
            log.info("project rate limit on again: Redis answers")
            self._skip_until = 0.0
        if int(count) <= self.per_second:
            return Verdict(True)
        return Verdict(False, max(int(left_ms), 1) / 1000)

    async def close(self) -> None:
        await self._client.aclose()
