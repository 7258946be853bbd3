"""The outbox relay: appends committed events to their project's Redis stream, in seq order.

A publisher relays its own batch right after commit. The loop that runs in every server relays
what publishers could not: events committed while Redis was down, or by a process that died
before relaying. A publisher that gives up sends NOTIFY, which wakes the loops at once; otherwise
they poll. One relayer per project at a time holds the project's relay row (`FOR UPDATE`; the
loops use `SKIP LOCKED` and move on to other projects), so a project's events reach the stream
in order and no two servers append the same events; the row's relayed_seq says how far they got.

Redis can lose what PostgreSQL marks relayed (a restart without its data, or without the tail of
its append-only file). Every append checks, atomically with it, that the stream still ends at the
project's mark; a stream that does not is refilled from PostgreSQL before anything newer goes in,
so newer events never land above a hole, however fast Redis came back (a restart that the
client's one retry hides). A publisher that finds such a stream leaves its events to the loop.
Each poll also asks Redis for its run id: a new one means it restarted, and every project's
stream is checked against its mark, so that projects nobody publishes to are refilled too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence

from redis.asyncio.connection import AbstractConnection

from zerodb_batch.domain.event import StoredEvent
from zerodb_batch.errors import Unavailable
from zerodb_batch.events.streams import SOCKET_TIMEOUT, RedisDown, StreamBehind, Streams
from zerodb_batch.observability.metrics import Metrics
from zerodb_batch.storage import outbox
from zerodb_batch.storage.pool import Conn, Database

log = logging.getLogger(__name__)

CLAIM_LIMIT = 200  # events per relay transaction and XADD pipeline (payloads reach 64 KiB)
PUBLISHER_ROUNDS = 5  # a publisher relays at most this many claims (a backlog is the loop's)
LOOP_ROUNDS = 20  # claims per project before a loop turns to the next project
# A publisher waits this long behind another relayer; a relay transaction idle longer than the
# Redis socket timeout (plus margin) is ended by PostgreSQL, releasing the project's lock.
TIMEOUTS = outbox.Timeouts(lock_ms=500, idle_ms=int(SOCKET_TIMEOUT * 1000) + 2000)
PROJECTS_PER_POLL = 100
MAX_BACKOFF = 10.0  # seconds between the loop's attempts while Redis stays down


class Relay:
    """Relays for one server: `after_publish` for publishers, `run` for the background loop.

    A circuit breaker: once Redis is found unreachable, publishers skip the inline relay (their
    events stay pending, and the call answers at once) until the loop reaches Redis again.
    """

    def __init__(
        self,
        db: Database,
        streams: Streams,
        database_url: str,
        poll: float,
        maxlen: int,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._metrics = metrics
        self._streams = streams
        self._url = database_url
        self._poll = poll
        self._maxlen = maxlen
        self.redis_down = False
        self._failures = 0  # attempts of the loop in a row that failed (for the backoff)
        self._run_id = ""  # of the Redis whose streams were last checked against the marks
        self._unchecked: set[str] = set()  # projects of that check still to do

    async def after_publish(self, project_id: str, own: Sequence[StoredEvent]) -> bool:
        """Relay the batch just committed (`own`; empty for a replayed request: then whatever
        the project has pending) and any older pending events; False if any were left behind."""
        if not self.redis_down:
            try:
                if await self._publisher_relay(project_id, own):
                    return True
            except outbox.RelayBusy:
                pass  # another relayer held the project past the lock timeout
            except StreamBehind as e:
                # Redis lost events: refilling the stream is the loop's work, not a publisher's.
                log.warning("events of project %s left for the relay: %s", project_id, e)
            except Unavailable as e:
                # Committed is committed: the loops relay these events once Redis is back.
                self._failed("publisher", "unavailable")
                self._trip(e)
                log.warning("events of project %s left for the relay: %s", project_id, e)
        with contextlib.suppress(Unavailable):
            async with self._db.connection() as conn:
                await outbox.notify(conn, project_id)
        return False

    def _trip(self, error: Exception) -> None:
        if isinstance(error, RedisDown) and not self.redis_down:
            log.warning("Redis is down; publishers leave events to the relay loop: %s", error)
            self.redis_down = True

    async def _publisher_relay(self, project_id: str, own: Sequence[StoredEvent]) -> bool:
        # The Redis connection first: connecting must not happen under the project's lock.
        async with self._streams.connection() as redis_conn:
            if own and await self._relay_own(redis_conn, project_id, own):
                return True
            up_to = own[-1].seq if own else outbox.LAST_SEQ
            return await self._relay(
                redis_conn, project_id, up_to, wait=True, rounds=PUBLISHER_ROUNDS
            )

    async def relay(self, project_id: str, up_to: int, *, wait: bool, rounds: int) -> bool:
        """Append the project's pending events with seq <= up_to; True when none is left.

        Raises RelayBusy if another process holds the project, Unavailable if a dependency is down.
        """
        async with self._streams.connection() as redis_conn:
            return await self._relay(redis_conn, project_id, up_to, wait=wait, rounds=rounds)

    async def _relay(
        self,
        redis_conn: AbstractConnection,
        project_id: str,
        up_to: int,
        *,
        wait: bool,
        rounds: int,
    ) -> bool:
        for _ in range(rounds):
            if await self._relay_once(redis_conn, project_id, up_to, wait) < CLAIM_LIMIT:
                return True
        return False

    async def _relay_own(
        self, redis_conn: AbstractConnection, project_id: str, own: Sequence[StoredEvent]
    ) -> bool:
        """The usual case, nothing older pending: append the batch from memory, not re-read."""
        packed = self._streams.prepare(project_id, own)  # before the lock, to hold it briefly
        first, last = own[0].seq, own[-1].seq
        # Pipelined: BEGIN travels with the lock and the mark (one round trip before the XADDs,
        # and the COMMIT's after them).
        async with self._db.pipelined_transaction() as conn:
            relayed = await outbox.lock_and_mark_own(conn, project_id, first, last, TIMEOUTS)
            # StreamBehind raised here rolls the mark back.
            if relayed == first - 1:
                self._sent("publisher", await self._streams.send(redis_conn, project_id, packed))
            elif first <= relayed < last:  # a relay loop took part of the batch already
                rest = [e for e in own if e.seq > relayed]
                packed = self._streams.prepare(project_id, rest, after=relayed)
                self._sent("publisher", await self._streams.send(redis_conn, project_id, packed))
        return relayed >= first - 1

    async def _relay_once(
        self, redis_conn: AbstractConnection, project_id: str, up_to: int, wait: bool
    ) -> int:
        async with self._db.transaction() as conn:
            relayed = await outbox.lock_relay(conn, project_id, wait=wait, timeouts=TIMEOUTS)
            batch = await outbox.claim(conn, project_id, relayed, up_to, CLAIM_LIMIT)
            if batch:
                # Appended before the mark commits: a crash in between appends them again,
                # which the append skips as already there (at least once, never lost).
                packed = self._streams.prepare(project_id, batch, after=relayed)
                try:
                    appended = await self._streams.send(redis_conn, project_id, packed)
                except StreamBehind as e:
                    if wait:  # a publisher: refilling is the loop's work
                        raise
                    await self._refill(redis_conn, conn, project_id, e.top, relayed)
                    appended = await self._streams.send(redis_conn, project_id, packed)
                await outbox.mark_relayed(conn, project_id, batch[-1].seq)
        if batch:  # counted as appended: events already there (a crash before the mark) are not
            self._sent("publisher" if wait else "loop", appended)
        return len(batch)

    async def restore(self, project_id: str) -> int:
        """Append again what the stream lost of the events marked relayed (a Redis restart that
        lost the tail of its append-only file); returns how many."""
        async with self._streams.connection() as redis_conn, self._db.transaction() as conn:
            relayed = await outbox.lock_relay(conn, project_id, wait=False, timeouts=TIMEOUTS)
            top = await self._streams.top(project_id)
            return await self._refill(redis_conn, conn, project_id, top, relayed)

    async def _refill(
        self, redis_conn: AbstractConnection, conn: Conn, project_id: str, top: int, relayed: int
    ) -> int:
        """Under the project's relay lock: append the events after `top` (the stream's last
        entry) up to the mark `relayed`; returns how many. Entry ids are the events' own, so this
        is safe to repeat. Older than the retention is left out: readers find the gap (their
        position against the first entry) and read those from PostgreSQL."""
        after, restored = max(top, relayed - self._maxlen), 0
        while after < relayed:
            batch = await outbox.claim(conn, project_id, after, relayed, CLAIM_LIMIT)
            if not batch:
                break
            packed = self._streams.prepare(project_id, batch, after=0)
            restored += await self._streams.send(redis_conn, project_id, packed)
            after = batch[-1].seq
        if restored:
            log.warning("re-appended %d events Redis lost from %s", restored, project_id)
        return restored

    async def run(self) -> None:
        """Forever: relay pending projects, then wait for a NOTIFY or the poll interval."""
        while True:
            try:
                await self._listen_and_relay()
            except Unavailable as e:
                self._failed("loop", "unavailable")
                self._trip(e)
                log.warning("event relay: %s; retrying", e)
            except Exception:  # a bug must not end relaying for the life of the process
                self._failed("loop", "error")
                log.exception("event relay failed; restarting it")
            self._failures += 1
            await asyncio.sleep(min(self._poll * 2 ** min(self._failures, 6), MAX_BACKOFF))

    async def _listen_and_relay(self) -> None:
        async with outbox.listen(self._url) as notifications:
            named: set[str] | None = None  # None: poll every project with pending events
            last_poll = 0.0
            while True:
                if named is None or time.monotonic() - last_poll >= self._poll:
                    named, last_poll = None, time.monotonic()
                    await self._check_redis()
                if await self._drain(named):
                    named = None  # a backlog is left: poll again without waiting
                else:
                    named = await notifications.wait(self._poll)

    async def _check_redis(self) -> None:
        """Each poll: is Redis reachable (closing the breaker), and is it the same Redis as last
        time? A new one (restarted) may have lost entries that PostgreSQL marks relayed."""
        run_id = await self._streams.run_id()
        self._failures = 0
        if run_id != self._run_id:
            self._unchecked = await self._restore(await self._relayed_projects())
            self._run_id = run_id
        elif self._unchecked:  # busy relaying at the last check
            self._unchecked = await self._restore(self._unchecked)
        if self.redis_down:  # only now: restored entries must go in before newer ones
            log.info("Redis is back; publishers relay again")
            self.redis_down = False

    async def _relayed_projects(self) -> list[str]:
        found: list[str] = []
        while True:
            async with self._db.connection() as conn:
                page = await outbox.relayed_projects(conn, found[-1] if found else "", 1000)
            found += page
            if len(page) < 1000:
                return found

    async def _restore(self, projects: Iterable[str]) -> set[str]:
        """Check each project's stream against its mark; returns the projects that were busy
        (another process held them), to check at the next poll."""
        busy: set[str] = set()
        for project in projects:
            if not await self._guarded(project, self._restore_one(project)):
                busy.add(project)
        return busy

    async def _drain(self, projects: set[str] | None) -> bool:
        """Relay the given projects (or all pending ones); True if work is known to be left.
        A project that fails is logged and left for the next poll; the others go on."""
        if projects is None:
            async with self._db.connection() as conn:
                projects = set(await outbox.pending_projects(conn, PROJECTS_PER_POLL))
        more = False
        for project in projects:
            relay = self.relay(project, outbox.LAST_SEQ, wait=False, rounds=LOOP_ROUNDS)
            more = not await self._guarded(project, relay) or more
        return more

    async def _restore_one(self, project_id: str) -> bool:
        try:
            await self.restore(project_id)
        except outbox.RelayBusy:
            return False
        return True

    async def _guarded(self, project_id: str, work: Awaitable[bool]) -> bool:
        """Run one project's work; a project that fails is logged and left for the next poll,
        so that the others go on. Redis being down fails every project alike: that propagates."""
        try:
            return await work
        except outbox.RelayBusy:
            return True  # its relayer covers it
        except RedisDown:
            raise
        except Exception as e:
            self._failed("loop", "unavailable" if isinstance(e, Unavailable) else "error")
            log.warning("event relay of project %s failed: %s", project_id, e)
            return True

    def _sent(self, path: str, events: int) -> None:
        """An append reached Redis and added `events` (for the metrics: events already in the
        stream, appended before a crash or a failed commit, are not counted again)."""
        if self._metrics is not None:
            self._metrics.relay_batches.labels(path).inc()
            self._metrics.relayed.labels(path).inc(events)

    def _failed(self, path: str, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.relay_failures.labels(path, reason).inc()
