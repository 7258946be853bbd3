"""Reading a project's stream for SubscribeEvents: a live tail, or a consumer group.

A tail keeps its own position. Event seqs have no gaps, so an entry whose seq jumps past the
position means the stream no longer holds the events between (trimmed by retention, or lost by
Redis): those are read from PostgreSQL and delivered first, in order. A consumer group keeps its
position in Redis and finds gaps the same way (the group's last delivered id against the first new
entry); unacknowledged entries of a consumer are delivered to another after an idle time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from zerodb_batch.domain.event import Position, StoredEvent, epoch_ms, from_epoch_ms
from zerodb_batch.domain.event_requests import Options, check_group_filter
from zerodb_batch.events.streams import MAX_BLOCK_MS, Entry, Gap, Streams
from zerodb_batch.storage import event_groups, outbox
from zerodb_batch.storage.pool import Conn, Database

BATCH = 100  # entries per read: what one subscription holds in memory
REPLAY_PAGE = 100  # events per PostgreSQL read when filling a gap (payloads reach 64 KiB)
CLAIM_EVERY = 1.0  # seconds between sweeps for stuck entries (shorter for short redelivery)
FULL_WAIT = 0.5  # seconds between checks while a consumer is at its max_unacked
# Seconds between saves of a group's acknowledged position to PostgreSQL: what a group that
# Redis lost gets again is at most what was acknowledged in the last interval (plus the unacked).
CHECKPOINT_EVERY = 5.0


@dataclass(frozen=True)
class Heartbeat:
    last: Position | None  # the last entry passed, if any


Item = StoredEvent | Heartbeat


def subscribe(db: Database, streams: Streams, options: Options) -> AsyncIterator[Item]:
    """The items of one subscription: a heartbeat once established, then events and heartbeats."""
    if options.group:
        return GroupReader(db, streams, options).run()
    return Tail(db, streams, options).run()


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


async def start_position(conn: Conn, options: Options) -> Position:
    """The position to read after. A time (or an id `ms-0`) becomes the seq before the first
    event at that time, so that gap detection works from the start."""
    start, project = options.start, options.project_id
    if isinstance(start, Position) and start.seq > 0:
        return start
    if start is None:
        return await outbox.head(conn, project)
    ms = start.ms if isinstance(start, Position) else epoch_ms(start)
    first = await outbox.first_seq_at(conn, project, from_epoch_ms(ms))
    seq = first - 1 if first is not None else (await outbox.head(conn, project)).seq
    return Position(ms, seq)


class Tail:
    def __init__(self, db: Database, streams: Streams, options: Options) -> None:
        self._db = db
        self._streams = streams
        self._o = options
        self.pos = Position(0, 0)

    async def run(self) -> AsyncIterator[Item]:
        async with self._db.connection() as conn:
            self.pos = await start_position(conn, self._o)
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
            async with self._db.connection() as conn:
                page = await outbox.between(conn, self._o.project_id, after, before, REPLAY_PAGE)
            for event in page:
                if event.position > self.pos:  # a start time can lie past the seq it mapped to
                    self.pos = event.position
                    if self._o.topics.matches(event.topic):
                        yield event
            if len(page) < REPLAY_PAGE:
                return
            after = page[-1].seq


class GroupReader:
    """A consumer of a group. The group's position lives in Redis; what the stream no longer holds
    (an entry trimmed while pending, or a gap after the group's last delivered id) comes from
    PostgreSQL, and is pending there (event_group_pending) until acknowledged: delivered again,
    to this consumer when it comes back or to another after the idle time, as Redis does for its
    own pending entries. A gap is written down in Redis atomically with the read that found it,
    so a reader that dies before delivering it leaves it to another (see streams._READ_NEW)."""

    def __init__(self, db: Database, streams: Streams, options: Options) -> None:
        self._db = db
        self._streams = streams
        self._o = options
        self.last: Position | None = None
        self._cursor = "-"  # of the sweep through the group's pending entries
        self._next_claim = 0.0
        self._tracked = True  # this consumer may hold events pending in PostgreSQL
        self._next_checkpoint = 0.0
        self._checkpointed = 0  # seq of the last position saved

    async def run(self) -> AsyncIterator[Item]:
        o = self._o
        # Positioned as a tail is, so that a gap up to the stream's first entry is found. A group
        # that exists keeps its own start: a group Redis lost is made again there, and so gets
        # again (at least once) whatever it may not have acknowledged.
        async with self._db.connection() as conn:
            group = await event_groups.register(
                conn, o.project_id, o.group, o.topics.canonical(), await start_position(conn, o)
            )
        check_group_filter(o.group, group.topics, o.topics.canonical())
        await self._streams.create_group(o.project_id, o.group, str(group.start))
        yield Heartbeat(None)
        clock = _Clock(o.heartbeat)
        async for event in self._own_pending():
            yield event
            clock.reset()
        while True:
            async for event in self._next_events(clock):
                yield event
                clock.reset()
            if clock.due():
                yield Heartbeat(self.last)
                clock.reset()

    async def _own_pending(self) -> AsyncIterator[StoredEvent]:
        """Entries delivered to this consumer name before and never acknowledged: from Redis's
        pending list, then from PostgreSQL's."""
        after = "0-0"
        while entries := await self._streams.read_group(
            self._o.project_id, self._o.group, self._o.consumer, after, BATCH, None
        ):
            async for event in self._deliver(entries):
                yield event
            after = str(entries[-1].position)
        seq = 0
        while events := await self._claim_tracked(own=True, after=seq):
            for event in events:
                yield event
            seq = events[-1].seq

    async def _claim_tracked(
        self, *, own: bool, after: int = 0, limit: int = BATCH
    ) -> list[StoredEvent]:
        o = self._o
        async with self._db.connection() as conn:
            found = await event_groups.claim(
                conn,
                o.project_id,
                o.group,
                o.consumer,
                own=own,
                idle_ms=o.redeliver_ms,
                after=after,
                limit=limit,
            )
        self._tracked = self._tracked or bool(found)
        return found

    async def _room(self) -> int:
        """How many more entries this consumer may hold unacknowledged, in Redis and PostgreSQL."""
        o = self._o
        held = await self._streams.pending(o.project_id, o.group, o.consumer)
        if self._tracked:  # PostgreSQL is asked only while this consumer may hold some there
            async with self._db.connection() as conn:
                tracked = await event_groups.count(conn, o.project_id, o.group, o.consumer)
            held, self._tracked = held + tracked, tracked > 0
        return min(BATCH, o.max_unacked - held)

    async def _next_events(self, clock: _Clock) -> AsyncIterator[StoredEvent]:
        """Stuck entries of other consumers (at most every CLAIM_EVERY), else new ones, within
        the consumer's max_unacked; waits up to the heartbeat when there are none."""
        o = self._o
        room = await self._room()
        if room <= 0:
            await asyncio.sleep(min(FULL_WAIT, clock.block_ms() / 1000))
            return
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + min(CLAIM_EVERY, o.redeliver_ms / 2000)
            async for event in self._sweep(room):
                yield event
            return
        before, entries = await self._streams.read_group_new(
            o.project_id, o.group, o.consumer, room
        )
        if not entries:
            block = clock.block_ms(cap_s=max(0.001, self._next_claim - time.monotonic()))
            await self._streams.wait_after(o.project_id, before, block)
            return
        async for event in self._deliver_new(before, entries):
            yield event

    async def _sweep(self, room: int) -> AsyncIterator[StoredEvent]:
        """What other consumers left: their stuck Redis entries, their stuck events pending in
        PostgreSQL, and a gap whose reader died while delivering it."""
        o = self._o
        self._cursor, claimed = await self._streams.claim_stuck(
            o.project_id, o.group, o.consumer, o.redeliver_ms, self._cursor, room
        )
        async for event in self._deliver(claimed, track_trimmed=True):
            yield event
        for event in await self._claim_tracked(own=False, limit=room):
            yield event
        gap = await self._streams.take_gap(o.project_id, o.group, o.consumer, o.redeliver_ms)
        if gap is not None:
            async for event in self._replay(gap):
                yield event
        if time.monotonic() >= self._next_checkpoint:
            self._next_checkpoint = time.monotonic() + CHECKPOINT_EVERY
            await self._checkpoint()

    async def _checkpoint(self) -> None:
        """Save how far the group has acknowledged everything, where Redis losing the group
        would make it again."""
        o = self._o
        acknowledged = await self._streams.acknowledged_up_to(o.project_id, o.group)
        if acknowledged is not None and acknowledged.seq > self._checkpointed:
            async with self._db.connection() as conn:
                await event_groups.advance(conn, o.project_id, o.group, acknowledged)
            self._checkpointed = acknowledged.seq

    async def _deliver_new(
        self, before: Position, entries: Sequence[Entry]
    ) -> AsyncIterator[StoredEvent]:
        """Entries new to the group, after the events the stream skipped (seqs have no gaps)."""
        after, start = before.seq, 0
        for i, entry in enumerate(entries):
            if entry.position.seq > after + 1:
                async for event in self._deliver(entries[start:i]):
                    yield event
                async for event in self._replay(Gap(after, entry.position.seq)):
                    yield event
                start = i
            after = entry.position.seq
        async for event in self._deliver(entries[start:]):
            yield event

    async def _replay(self, gap: Gap) -> AsyncIterator[StoredEvent]:
        """A gap's events from PostgreSQL, a page at a time: each page pending to this consumer
        before it goes out, and the gap in Redis moved past it after."""
        o, after = self._o, gap.after
        while after + 1 < gap.before:
            async with self._db.transaction() as conn:
                page = await outbox.between(conn, o.project_id, after, gap.before, REPLAY_PAGE)
                wanted = [e for e in page if o.topics.matches(e.topic)]
                await event_groups.track(
                    conn, o.project_id, o.group, o.consumer, [e.seq for e in wanted]
                )
            self._tracked = self._tracked or bool(wanted)
            for event in wanted:
                self.last = event.position
                yield event
            after = page[-1].seq if len(page) == REPLAY_PAGE else gap.before - 1
            await self._streams.advance_gap(o.project_id, o.group, o.consumer, gap, after)

    async def _deliver(
        self, entries: Sequence[Entry], *, track_trimmed: bool = False
    ) -> AsyncIterator[StoredEvent]:
        """Matching events go out (trimmed ones read from PostgreSQL); entries of other topics,
        or of no event at all, are acknowledged at once. Trimmed entries taken from another
        consumer (`track_trimmed`) left Redis's pending list as they were claimed (Redis drops
        ids it no longer holds), so they become pending in PostgreSQL instead."""
        o = self._o
        trimmed = [e.position.seq for e in entries if e.event is None]
        stored: dict[int, StoredEvent] = {}
        if trimmed:
            async with self._db.transaction() as conn:
                found = await outbox.by_seqs(conn, o.project_id, trimmed)
                stored = {e.seq: e for e in found if o.topics.matches(e.topic)}
                if track_trimmed:
                    await event_groups.track(conn, o.project_id, o.group, o.consumer, [*stored])
                    self._tracked = self._tracked or bool(stored)
        skipped: list[str] = []
        for entry in entries:
            self.last = entry.position
            event = entry.event or stored.get(entry.position.seq)
            if event is not None and o.topics.matches(event.topic):
                yield event
            else:
                skipped.append(str(entry.position))
        await self._streams.ack(o.project_id, o.group, skipped)
