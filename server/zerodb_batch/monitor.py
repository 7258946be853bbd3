"""Watches the dependencies: probes PostgreSQL and Redis about once a second and tells listeners
when either becomes unreachable or comes back.

`app.py` turns the state into health statuses; calls can read it to fail fast
(`monitor.postgres_up`, or `monitor.require_postgres()` which raises `Unavailable`) instead of
waiting out the pool timeout. No grpc here: the monitor knows nothing of how it is reported.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace

from zerodb_batch.errors import Unavailable

log = logging.getLogger(__name__)

# A probe that has not answered within this long counts as down; a refused connection counts
# at once. Longer than a loaded machine's connect, short next to the pool timeout.
PROBE_TIMEOUT = 2.0

# A probe returns when its dependency answers and raises when it does not.
Probe = Callable[[], Coroutine[object, None, object]]
Listener = Callable[["DependencyState"], Awaitable[None]]


@dataclass(frozen=True)
class DependencyState:
    """Whether each dependency answered its last probe."""

    postgres_up: bool = True
    redis_up: bool = True


class DependencyMonitor:
    """Runs the probes (`run()`, a background task) and keeps the latest `state`.

    Listeners (`subscribe`) are called, in order, with each new state; `changed()` waits for the
    next one. A probe that hangs is not cancelled (psycopg's cancel of a hung server would block
    for seconds): it stays outstanding, the dependency counts as down meanwhile, and the next
    probe starts once it has ended.
    """

    def __init__(
        self,
        postgres: Probe,
        redis: Probe,
        interval: float,
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self._probes = {"postgres": postgres, "redis": redis}
        self._interval = interval
        self._closers = closers  # of the probes' connections
        self._state = DependencyState()
        self._pending: dict[str, asyncio.Task[object]] = {}
        self._listeners: list[Listener] = []
        self._change = asyncio.Condition()

    @property
    def state(self) -> DependencyState:
        return self._state

    @property
    def postgres_up(self) -> bool:
        return self._state.postgres_up

    @property
    def redis_up(self) -> bool:
        return self._state.redis_up

    def require_postgres(self) -> None:
        """Raise Unavailable at once while PostgreSQL is known to be unreachable."""
        if not self._state.postgres_up:
            raise Unavailable("PostgreSQL is unreachable; retry the call")

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def changed(self) -> DependencyState:
        """The next state that differs from the current one."""
        async with self._change:
            await self._change.wait()
            return self._state

    async def run(self) -> None:
        """Probe forever, every `interval` seconds."""
        try:
            while True:
                await self.check()
                await asyncio.sleep(self._interval)
        finally:
            for task in self._pending.values():
                task.cancel()
            if self._pending:  # a cancelled probe may need a moment to close its connection
                await asyncio.wait(self._pending.values(), timeout=PROBE_TIMEOUT)

    async def close(self) -> None:
        """Close the probes' connections (after run() has ended)."""
        for close in self._closers:
            await close()

    async def check(self) -> DependencyState:
        """Probe both dependencies now; tell the listeners if anything changed."""
        postgres, redis = await asyncio.gather(self._answers("postgres"), self._answers("redis"))
        new = replace(self._state, postgres_up=postgres, redis_up=redis)
        if new != self._state:
            self._state = new
            await self._announce(new)
        return new

    async def _answers(self, name: str) -> bool:
        task = self._pending.get(name)
        if task is None or task.done():
            task = self._pending[name] = asyncio.create_task(self._probes[name]())
        done, _ = await asyncio.wait({task}, timeout=PROBE_TIMEOUT)
        if not done:
            self._note(name, False, f"no answer within {PROBE_TIMEOUT:g} s")
            return False
        error = task.exception()
        self._note(name, error is None, str(error))
        return error is None

    def _note(self, name: str, up: bool, why: str) -> None:
        was = getattr(self._state, f"{name}_up")
        if was and not up:
            log.warning("%s is unreachable (%s)", name, why)
        elif up and not was:
            log.info("%s is reachable again", name)

    async def _announce(self, state: DependencyState) -> None:
        for listener in self._listeners:
            try:
                await listener(state)
            except Exception:  # one broken listener must not silence the others
                log.exception("dependency listener failed")
        async with self._change:
            self._change.notify_all()
