"""The outbox relay: appends committed events to their project's Redis stream, in seq order.

A publisher relays its own batch right after commit. The loop that runs in every server relays
what publishers could not: events committed while Redis was down, or by a process that died
before relaying. A publisher that gives up sends NOTIFY, which wakes the loops at once; otherwise
they poll. One relayer per project at a time holds the project's relay row (`FOR UPDATE`; the
loops use `SKIP LOCKED` and move on to other projects), so a project's events reach the stream
in order and no two servers append the same events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import psycopg
from psycopg_pool import AsyncConnectionPool

from zerodb_batch.domain.events import StoredEvent
from zerodb_batch.errors import Unavailable
from zerodb_batch.events.streams import Streams
from zerodb_batch.storage import events
from zerodb_batch.storage.pool import Conn, connection, transaction
from zerodb_batch.storage.queries import Q

log = logging.getLogger(__name__)

CLAIM_LIMIT = 200  # events per relay transaction and XADD pipeline (payloads reach 64 KiB)
PUBLISHER_ROUNDS = 5  # a publisher relays at most this many claims (a backlog is the loop's)
LOOP_ROUNDS = 20  # claims per project before a loop turns to the next project
PUBLISHER_LOCK_TIMEOUT_MS = 2000  # a publisher waits this long behind another relayer
PROJECTS_PER_POLL = 100


class Relay:
    """Relays for one server: `after_publish` for publishers, `run` for the background loop."""

    def __init__(
        self, pool: AsyncConnectionPool[Conn], streams: Streams, database_url: str, poll: float
    ) -> None:
        self._pool = pool
        self._streams = streams
        self._url = database_url
        self._poll = poll
        self._redis_down = False

    async def after_publish(self, project_id: str, own: Sequence[StoredEvent]) -> bool:
        """Relay the batch just committed (`own`; empty for a replayed request: then whatever
        the project has pending) and any older pending events; False if any were left behind."""
        up_to = own[-1].seq if own else events.LAST_SEQ
        try:
            if own and await self._relay_own(project_id, own):
                return True
            if await self.relay(project_id, up_to, wait=True, rounds=PUBLISHER_ROUNDS):
                return True
        except events.RelayBusy:
            pass  # another relayer held the project past the lock timeout
        except Unavailable as e:
            # Committed is committed: the loops relay these events once the dependency is back.
            log.warning("events of project %s left for the relay: %s", project_id, e)
        with contextlib.suppress(Unavailable):
            async with connection(self._pool) as conn:
                await events.notify(conn, project_id)
        return False

    async def relay(self, project_id: str, up_to: int, *, wait: bool, rounds: int) -> bool:
        """Append the project's pending events with seq <= up_to; True when none is left.

        Raises RelayBusy if another process holds the project, Unavailable if a dependency is down.
        """
        for _ in range(rounds):
            if await self._relay_once(project_id, up_to, wait) < CLAIM_LIMIT:
                return True
        return False

    async def _relay_own(self, project_id: str, own: Sequence[StoredEvent]) -> bool:
        """The usual case, nothing older pending: append the batch from memory, not re-read."""
        packed = self._streams.prepare(project_id, own)  # before the lock, to hold it briefly
        async with transaction(self._pool) as conn:
            marked = await events.lock_and_mark_own(
                conn, project_id, own[0].seq, own[-1].seq, PUBLISHER_LOCK_TIMEOUT_MS
            )
            if len(marked) == len(own):
                await self._streams.send(packed)
            elif marked:  # a relay loop took part of the batch already
                await self._streams.append(project_id, [e for e in own if e.seq in marked])
        return bool(marked)

    async def _relay_once(self, project_id: str, up_to: int, wait: bool) -> int:
        async with transaction(self._pool) as conn:
            await events.lock_relay(
                conn, project_id, wait=wait, lock_timeout_ms=PUBLISHER_LOCK_TIMEOUT_MS
            )
            batch = await events.claim(conn, project_id, up_to, CLAIM_LIMIT)
            if batch:
                # Appended before the mark commits: a crash in between appends them again,
                # which the stream refuses as duplicates (at least once, never lost).
                await self._streams.append(project_id, batch)
                await events.mark_relayed(conn, project_id, batch[0].seq, batch[-1].seq)
        return len(batch)

    async def run(self) -> None:
        """Forever: relay pending projects, then wait for a NOTIFY or the poll interval."""
        while True:
            try:
                await self._listen_and_relay()
            except psycopg.Error as e:
                log.warning("event relay lost PostgreSQL (%s); retrying in %.1f s", e, self._poll)
            except Unavailable as e:
                log.warning("event relay: %s; retrying in %.1f s", e, self._poll)
            except Exception:  # a bug must not end relaying for the life of the process
                log.exception("event relay failed; restarting it in %.1f s", self._poll)
            await asyncio.sleep(self._poll)

    async def _listen_and_relay(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
            await conn.execute(Q["event_listen"])
            named: set[str] | None = None  # None: poll every project with pending events
            last_poll = 0.0
            while True:
                if named is None or time.monotonic() - last_poll >= self._poll:
                    named, last_poll = None, time.monotonic()
                if await self._drain(named):
                    named = None  # a backlog is left: poll again without waiting
                else:
                    named = await self._wait(conn)

    async def _drain(self, projects: set[str] | None) -> bool:
        """Relay the given projects (or all pending ones); True if work is known to be left."""
        if projects is None:
            async with connection(self._pool) as conn:
                projects = set(await events.pending_projects(conn, PROJECTS_PER_POLL))
        more = False
        try:
            for project in projects:
                with contextlib.suppress(events.RelayBusy):  # its relayer covers it
                    done = await self.relay(
                        project, events.LAST_SEQ, wait=False, rounds=LOOP_ROUNDS
                    )
                    more = more or not done
        except Unavailable as e:
            if not self._redis_down:
                log.warning("event relay paused: %s", e)
            self._redis_down = True
            await asyncio.sleep(self._poll)  # NOTIFYs keep coming while Redis is down
            return False
        if self._redis_down:
            log.info("event relay resumed")
        self._redis_down = False
        return more

    async def _wait(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> set[str] | None:
        """Projects named by NOTIFY within one poll interval, or None when it passed silently."""
        named = {n.payload async for n in conn.notifies(timeout=self._poll, stop_after=1)}
        if not named:
            return None
        # A burst of publishers deferring together: collect it and relay each project once.
        named.update([n.payload async for n in conn.notifies(timeout=0.01)])
        return named
