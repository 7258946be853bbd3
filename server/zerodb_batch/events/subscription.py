"""Reading a project's stream for SubscribeEvents: a live tail, or a consumer group.

A tail keeps its own position. Event seqs have no gaps, so an entry whose seq jumps past the
position means the stream no longer holds the events between (trimmed by retention, or lost by
Redis): those are read from PostgreSQL and delivered first, in order. A consumer group keeps its
position in Redis; unacknowledged entries are delivered again after an idle time (XAUTOCLAIM).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg_pool import AsyncConnectionPool

from zerodb_batch.domain.events import Position, StoredEvent, TopicFilter, epoch_ms, from_epoch_ms
from zerodb_batch.events.streams import MAX_BLOCK_MS, Entry, Streams
from zerodb_batch.storage import events
from zerodb_batch.storage.pool import Conn, connection

BATCH = 100  # entries per read: what one subscription holds in memory
REPLAY_PAGE = 100  # events per PostgreSQL read when filling a gap (payloads reach 64 KiB)
CLAIM_EVERY = 1.0  # seconds between sweeps for stuck entries (shorter for short redelivery)
FULL_WAIT = 0.5  # seconds between checks while a consumer is at its max_unacked

Start = Position | datetime | None  # after a stream id, from a time, or (None) new events only


@dataclass(frozen=True)
class Heartbeat:
    last: Position | None  # the last entry passed, if any


Item = StoredEvent | Heartbeat


@dataclass(frozen=True)
class Options:
    project_id: str
    topics: TopicFilter
    start: Start
    heartbeat: float  # seconds
    group: str = ""
    consumer: str = ""
    max_unacked: int = 0
    redeliver_ms: int = 0


def subscribe(
    pool: AsyncConnectionPool[Conn], streams: Streams, options: Options
) -> AsyncIterator[Item]:
    """The items of one subscription: a heartbeat once established, then events and heartbeats."""
    if options.group:
        return GroupReader(streams, options).run()
    return Tail(pool, streams, options).run()


class _Clock:
    """When the next heartbeat is due: `interval` after the last message sent."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.since = time.monotonic()

    def reset(self) -> None:
        self.since = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.since >= self.interval

    def block_ms(self, cap_s: float = MAX_BLOCK_MS / 1000) -> int:
        """How long a read may wait: never 0 (which Redis takes as forever)."""
        left = min(self.interval - (time.monotonic() - self.since), cap_s, MAX_BLOCK_MS / 1000)
        return max(1, int(left * 1000))


class Tail:
    def __init__(self, pool: AsyncConnectionPool[Conn], streams: Streams, options: Options) -> None:
        self._pool = pool
        self._streams = streams
        self._o = options
        self.pos = Position(0, 0)

    async def run(self) -> AsyncIterator[Item]:
        self.pos = await self._start_position()
        await self._streams.ping()
        yield Heartbeat(self.pos)
        clock = _Clock(self._o.heartbeat)
        while True:
            entries = await self._streams.read(
                self._o.project_id, self.pos, BATCH, clock.block_ms()
            )
            async for event in self._deliver(entries):
                yield event
                clock.reset()
            if clock.due():
                yield Heartbeat(self.pos)
                clock.reset()

    async def _start_position(self) -> Position:
        """The position to read after. A time (or an id `ms-0`) becomes the seq before the first
        event at that time, so that gap detection works from the start."""
        start, project = self._o.start, self._o.project_id
        if isinstance(start, Position) and start.seq > 0:
            return start
        async with connection(self._pool) as conn:
            if start is None:
                return await events.head(conn, project)
            ms = start.ms if isinstance(start, Position) else epoch_ms(start)
            first = await events.first_seq_at(conn, project, from_epoch_ms(ms))
            seq = first - 1 if first is not None else (await events.head(conn, project)).seq
        return Position(ms, seq)

    async def _deliver(self, entries: Sequence[Entry]) -> AsyncIterator[StoredEvent]:
        for entry in entries:
            if entry.event is None or entry.position <= self.pos:
                continue  # already passed (a duplicate append)
            if entry.position.seq > self.pos.seq + 1:
                async for event in self._replay(entry.position.seq):
                    yield event
            self.pos = entry.position
            if self._o.topics.matches(entry.event.topic):
                yield entry.event

    async def _replay(self, before: int) -> AsyncIterator[StoredEvent]:
        """The events the stream skipped, from PostgreSQL, a page at a time."""
        after = self.pos.seq
        while True:
            async with connection(self._pool) as conn:
                page = await events.between(conn, self._o.project_id, after, before, REPLAY_PAGE)
            for event in page:
                if event.position > self.pos:  # a start time can lie past the seq it mapped to
                    self.pos = event.position
                    if self._o.topics.matches(event.topic):
                        yield event
            if len(page) < REPLAY_PAGE:
                return
            after = page[-1].seq


class GroupReader:
    def __init__(self, streams: Streams, options: Options) -> None:
        self._streams = streams
        self._o = options
        self.last: Position | None = None
        self._cursor = "0-0"  # of the XAUTOCLAIM sweep through the group's pending entries
        self._next_claim = 0.0

    async def run(self) -> AsyncIterator[Item]:
        o = self._o
        await self._streams.create_group(o.project_id, o.group, self._group_start())
        yield Heartbeat(None)
        clock = _Clock(o.heartbeat)
        async for event in self._own_pending():
            yield event
            clock.reset()
        while True:
            async for event in self._deliver(await self._next_entries(clock)):
                yield event
                clock.reset()
            if clock.due():
                yield Heartbeat(self.last)
                clock.reset()

    def _group_start(self) -> str:
        start = self._o.start
        if start is None:
            return "$"
        return str(start) if isinstance(start, Position) else f"{epoch_ms(start)}-0"

    async def _own_pending(self) -> AsyncIterator[StoredEvent]:
        """Entries delivered to this consumer name before and never acknowledged."""
        after = "0-0"
        while entries := await self._streams.read_group(
            self._o.project_id, self._o.group, self._o.consumer, after, BATCH, None
        ):
            async for event in self._deliver(entries):
                yield event
            after = str(entries[-1].position)

    async def _next_entries(self, clock: _Clock) -> list[Entry]:
        """Stuck entries of the group (at most every CLAIM_EVERY), else new ones, within the
        consumer's max_unacked."""
        o = self._o
        room = min(
            BATCH, o.max_unacked - await self._streams.pending(o.project_id, o.group, o.consumer)
        )
        if room <= 0:
            await asyncio.sleep(min(FULL_WAIT, clock.block_ms() / 1000))
            return []
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + min(CLAIM_EVERY, o.redeliver_ms / 2000)
            self._cursor, claimed = await self._streams.autoclaim(
                o.project_id, o.group, o.consumer, o.redeliver_ms, self._cursor, room
            )
            if claimed:
                return claimed
        block = clock.block_ms(cap_s=max(0.001, self._next_claim - time.monotonic()))
        return await self._streams.read_group(o.project_id, o.group, o.consumer, ">", room, block)

    async def _deliver(self, entries: Sequence[Entry]) -> AsyncIterator[StoredEvent]:
        """Matching events go out; trimmed entries and other topics are acknowledged at once."""
        skipped: list[str] = []
        for entry in entries:
            self.last = entry.position
            if entry.event is not None and self._o.topics.matches(entry.event.topic):
                yield entry.event
            else:
                skipped.append(str(entry.position))
        await self._streams.ack(self._o.project_id, self._o.group, skipped)
