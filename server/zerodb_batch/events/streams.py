"""Redis Streams: each project's stream, appending events, reading, consumer groups, acks.

With rate_limit.py (calls per project), the only module that imports redis. A Redis that cannot
be reached (refused, reset, timed out, still loading its data) becomes `Unavailable`, which
callers either report (subscribers) or absorb (publishers: the events are safe in PostgreSQL
and the relay appends them later).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

import hiredis
import redis.asyncio as aredis
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.trace import TracerProvider
from redis.asyncio.connection import AbstractConnection
from redis.backoff import NoBackoff
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ConnectionError,
    MasterDownError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)
from redis.retry import Retry

from zerodb_batch.domain.event import Position, StoredEvent, entry_id, epoch_ms, from_epoch_ms
from zerodb_batch.errors import FailedPrecondition, Unavailable
from zerodb_batch.observability import tracing

# The group's last-delivered-id (nil for a group the stream does not have), for the scripts below.
_LAST_DELIVERED = """
local function last_delivered(stream, group)
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local name, lid
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then lid = g[i + 1] end
    end
    if name == group then return lid end
  end
  return nil
end
"""
# A blocking read must return before the socket timeout; heartbeats cut reads shorter still.
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
MAX_BLOCK_MS = 2000
# Cannot be reached, or not ready yet (LOADING: reading its data back after a restart).
_DOWN = (ConnectionError, BusyLoadingError, TimeoutError, OSError)
# Replies of a Redis in transition (a replica during a failover, a cluster rebalancing): the
# same command may succeed in a moment, so they are retryable, not refusals.
_TRANSIENT = (ReadOnlyError, MasterDownError, ClusterDownError, TryAgainError)
_EVENT_FIELDS = frozenset(("event_id", "topic", "payload"))
# XREADGROUP `>` together with the group's last delivered id before it, atomically: the reader
# learns whether entries between that id and the first one it got were trimmed away. Each such
# gap is also written down in the group's gap hash (KEYS[2]: after seq -> `before|consumer|ms`)
# in the same step, so that a reader that dies before delivering it leaves it to another rather
# than losing it: the group's position in Redis has already moved past it. (Seqs are compared as
# Lua numbers: exact below 2^53.)
_READ_NEW = (
    _LAST_DELIVERED
    + """
local last = last_delivered(KEYS[1], ARGV[1]) or '0-0'
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                         'STREAMS', KEYS[1], '>')
if reply then
  local now = redis.call('TIME')
  local ms = now[1] * 1000 + math.floor(now[2] / 1000)
  local prev = string.match(last, '%-(%d+)$')
  for _, entry in ipairs(reply[1][2]) do
    local seq = string.match(entry[1], '%-(%d+)$')
    if tonumber(seq) > tonumber(prev) + 1 then
      redis.call('HSET', KEYS[2], prev, seq .. '|' .. ARGV[2] .. '|' .. ms)
    end
    prev = seq
  end
end
return {last, reply}
"""
)
# A reader moves its gap forward as it delivers it (`after` ARGV[1] -> ARGV[2]); the field goes
# once the gap is done. The time it writes says the reader is alive.
_GAP_ADVANCE = """
redis.call('HDEL', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) + 1 < tonumber(ARGV[3]) then
  local now = redis.call('TIME')
  local ms = now[1] * 1000 + math.floor(now[2] / 1000)
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3] .. '|' .. ARGV[4] .. '|' .. ms)
end
return 1
"""
# A gap whose reader has not moved it for `idle` ms (it died) is taken over by this consumer.
_GAP_TAKE = """
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local before, _, at = string.match(all[i + 1], '^(%d+)|(.*)|(%d+)$')
  if before and ms - tonumber(at) > tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], all[i], before .. '|' .. ARGV[1] .. '|' .. ms)
    return {all[i], before}
  end
end
return false
"""
# The group's position below which it has acknowledged everything: its last delivered id, or just
# before its oldest pending entry ({id, 1}: one seq less). None while a gap is being delivered.
_SAFE = (
    _LAST_DELIVERED
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
local last = last_delivered(KEYS[1], ARGV[1])
if not last then return false end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
if pending[1] > 0 then return {pending[2], 1} end
return {last, 0}
"""
)
# Appends events unless the stream lost some that PostgreSQL marks relayed: its last entry must
# be at least seq ARGV[1] (a Redis restarted without its data, or without the tail of its file,
# is found here, atomically with the append, however fast it came back). Entries at or below the
# last are already there (a relayer that did not commit its mark) and are skipped. ARGV[2] is the
# MAXLEN; then five values an event: entry id, event_id, topic, payload, published_at (as
# `prepare` lays them out).
# Returns {appended, top}, appended -1 when the stream is behind (nothing appended).
_APPEND = """
local top = 0
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] then top = tonumber(string.match(last[1][1], '%-(%d+)$')) end
if top < tonumber(ARGV[1]) then return {-1, top} end
local n = 0
for i = 3, #ARGV, 5 do
  if tonumber(string.match(ARGV[i], '%-(%d+)$')) > top then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], ARGV[i], 'event_id', ARGV[i + 1],
               'topic', ARGV[i + 2], 'payload', ARGV[i + 3], 'published_at', ARGV[i + 4])
    n = n + 1
  end
end
return {n, top}
"""


class StreamBehind(Exception):
    """The stream lacks events PostgreSQL marks relayed: Redis lost them. Nothing was appended;
    the stream must be refilled from `top` first."""

    def __init__(self, project_id: str, top: int) -> None:
        super().__init__(f"the stream of {project_id} lost the events after seq {top}")
        self.top = top


class RedisDown(Unavailable):
    """Redis cannot be reached (as opposed to refusing one command)."""


def trace_commands(provider: TracerProvider) -> None:
    """Every Redis command a span of `provider` (OpenTelemetry's redis instrumentation; the
    relay's XADD pipelines, sent below the client, get spans of their own in `send`)."""
    instrumentor = RedisInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)


def stream_key(project_id: str) -> str:
    """`zerodb:{<project>}:events`: the hash tag keeps a project's keys in one cluster slot."""
    return f"zerodb:{{{project_id}}}:events"


def gaps_key(project_id: str, group: str) -> str:
    """The gaps a group's readers are delivering from PostgreSQL (in the stream's slot)."""
    return f"zerodb:{{{project_id}}}:gaps:{group}"


@dataclass(frozen=True)
class Gap:
    """Events a group skipped because the stream lacked them: after < seq < before."""

    after: int
    before: int


@dataclass(frozen=True)
class Packed:
    """Commands in the Redis protocol, ready to send, and how many replies they will get."""

    data: bytes
    count: int


@dataclass(frozen=True)
class Entry:
    """A stream entry; `event` is None for a pending id whose entry was trimmed away."""

    position: Position
    event: StoredEvent | None


class Streams:
    """The Redis client shared by the relay and the subscriptions of one server."""

    def __init__(self, client: aredis.Redis, maxlen: int) -> None:
        self._client = client
        self._maxlen = maxlen
        self._read_new: Any = client.register_script(_READ_NEW)
        self._gap_advance: Any = client.register_script(_GAP_ADVANCE)
        self._gap_take: Any = client.register_script(_GAP_TAKE)
        self._safe: Any = client.register_script(_SAFE)

    @classmethod
    def open(
        cls, url: str, maxlen: int, max_connections: int, socket_timeout: float = SOCKET_TIMEOUT
    ) -> Streams:
        """A client for `url` with at most `max_connections` (a caller beyond them waits up to
        the connect timeout). Connections are made on first use, so Redis may be down now."""
        pool = aredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=CONNECT_TIMEOUT,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=CONNECT_TIMEOUT,
            # One quick retry replaces a pooled connection that a Redis restart broke; more
            # would only delay the fallback to the outbox.
            retry=Retry(NoBackoff(), 1),
        )
        return cls(aredis.Redis(connection_pool=pool), maxlen)

    async def close(self) -> None:
        await self._client.aclose()

    def connection_counts(self) -> tuple[int, int, int]:
        """(idle, in use, maximum) connections of the pool, for the metrics."""
        pool = self._client.connection_pool
        (idle, _), (in_use, _) = pool.get_connection_count()
        return idle, in_use, pool.max_connections

    async def ping(self) -> None:
        async with _translate():
            await self._client.ping()

    def prepare(
        self, project_id: str, events: Sequence[StoredEvent], after: int | None = None
    ) -> Packed:
        """The append of `events` (each with its own id, trimming to about `maxlen`), packed: one
        EVAL of _APPEND, which refuses if the stream's last entry is below seq `after` (default:
        the seq before the first event; 0 to append whatever the stream holds)."""
        after = events[0].seq - 1 if after is None else after
        args: list[str] = []
        when, ms, published = None, 0, ""
        for e in events:
            if e.publish_time != when:  # a batch shares one publish time: converted once
                when, ms, published = e.publish_time, epoch_ms(e.publish_time), _iso(e.publish_time)
            args += (entry_id(ms, e.seq), e.id, e.topic, e.payload, published)
        command = ("EVAL", _APPEND, "1", stream_key(project_id), str(after), str(self._maxlen))
        # hiredis packs in C: redis-py's asyncio pipeline packs in Python, which cost more CPU
        # than the XADDs themselves (measured: ~14k against ~33k events/s).
        return Packed(hiredis.pack_command(cast(Any, (*command, *args))), len(events))

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AbstractConnection]:
        """A connected connection of the pool: made (or found) before taking any lock."""
        pool = self._client.connection_pool
        async with _translate():
            conn: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            yield conn
        finally:
            await pool.release(conn)

    async def send(self, conn: AbstractConnection, project_id: str, packed: Packed) -> int:
        """Send the append and check its reply; returns how many entries it added (events at or
        below the stream's last entry are already there: a relayer that committed its mark late,
        or not at all). Raises StreamBehind, having appended nothing, if the stream lost events.
        """
        span = tracing.span("XADD", **{"db.system": "redis", "zerodb.events": packed.count})
        async with _translate():
            try:
                with span:
                    await conn.send_packed_command(packed.data)
                    reply = await _reply(conn)
            except BaseException:
                await conn.disconnect()  # the reply may be left unread on it
                raise
        if isinstance(reply, ResponseError):
            raise Unavailable(f"Redis refused an event: {reply}")
        appended, top = cast(list[int], reply)
        if appended < 0:
            raise StreamBehind(project_id, int(top))
        return int(appended)

    async def top(self, project_id: str) -> int:
        """The seq of the stream's last entry (0 when it has none)."""
        async with _translate():
            last = await self._client.xrevrange(stream_key(project_id), count=1)
        position = Position.parse(str(last[0][0])) if last else None
        return position.seq if position else 0

    async def run_id(self) -> str:
        """Changes whenever Redis restarts, which may have lost the tail of every stream."""
        async with _translate():
            info = await self._client.info("server")
        return str(info["run_id"])

    async def read(
        self, project_id: str, after: Position, count: int, block_ms: int
    ) -> list[Entry]:
        """Entries after `after`, waiting up to `block_ms` for the first one."""
        async with _translate():
            reply = await self._client.xread(
                {stream_key(project_id): str(after)}, count=count, block=block_ms
            )
        return _entries(reply)

    async def create_group(self, project_id: str, group: str, start: str) -> None:
        """Create `group` positioned at `start` (exclusive), unless it exists already."""
        async with _translate(), _group_errors(group):
            try:
                await self._client.xgroup_create(
                    stream_key(project_id), group, start, mkstream=True
                )
            except ResponseError as e:
                if _refusal(e) != "BUSYGROUP":
                    raise

    async def read_group(
        self,
        project_id: str,
        group: str,
        consumer: str,
        start: str,
        count: int,
        block_ms: int | None,
    ) -> list[Entry]:
        """This consumer's pending entries after the id `start` (`event` None if trimmed)."""
        async with _translate(), _group_errors(group):
            reply = await self._client.xreadgroup(
                group, consumer, {stream_key(project_id): start}, count=count, block=block_ms
            )
        return _entries(reply)

    async def read_group_new(
        self, project_id: str, group: str, consumer: str, count: int
    ) -> tuple[Position, list[Entry]]:
        """Entries new to the group (`>`), and the group's last delivered id before them: an
        entry whose seq jumps past it means the stream lost the events between (trimmed). Such
        a gap is written down in the group's gap hash at once; see `advance_gap`."""
        keys = [stream_key(project_id), gaps_key(project_id, group)]
        async with _translate(), _group_errors(group):
            last, reply = await self._read_new(keys=keys, args=[group, consumer, count])
        found = [_entry(eid, _pairs(fields)) for _, items in reply or () for eid, fields in items]
        return Position.parse(str(last)) or Position(0, 0), found

    async def advance_gap(
        self, project_id: str, group: str, consumer: str, gap: Gap, after: int
    ) -> None:
        """`consumer` delivered the gap's events up to seq `after` (all of them: the gap goes)."""
        key = gaps_key(project_id, group)
        args = [gap.after, after, gap.before, consumer]
        async with _translate():
            await self._gap_advance(keys=[key], args=args)

    async def acknowledged_up_to(self, project_id: str, group: str) -> Position | None:
        """A position at or below which the group has acknowledged every event (None while a
        gap is being delivered, or if the group is gone)."""
        keys = [stream_key(project_id), gaps_key(project_id, group)]
        async with _translate(), _group_errors(group):
            found = await self._safe(keys=keys, args=[group])
        position = Position.parse(str(found[0])) if found else None
        if position is None or position.seq < int(found[1]):
            return None
        return Position(position.ms, position.seq - int(found[1]))

    async def take_gap(
        self, project_id: str, group: str, consumer: str, idle_ms: int
    ) -> Gap | None:
        """A gap of the group that its reader left idle past `idle_ms` (it died), now ours."""
        async with _translate():
            taken = await self._gap_take(
                keys=[gaps_key(project_id, group)], args=[consumer, idle_ms]
            )
        return Gap(int(taken[0]), int(taken[1])) if taken else None

    async def wait_after(self, project_id: str, after: Position, block_ms: int) -> None:
        """Return once the stream holds an entry after `after`, or after `block_ms`."""
        async with _translate():
            await self._client.xread({stream_key(project_id): str(after)}, count=1, block=block_ms)

    async def claim_stuck(
        self, project_id: str, group: str, consumer: str, idle_ms: int, cursor: str, count: int
    ) -> tuple[str, list[Entry]]:
        """Take over entries that *other* consumers have held longer than `idle_ms` (XAUTOCLAIM
        would also take this consumer's own, delivering them to it again and again).

        Scans the group's pending list a page at a time from `cursor`; returns the next cursor
        and the entries taken. A pending id whose entry was trimmed comes back with no event.
        """
        key, client = stream_key(project_id), cast(Any, self._client)  # replies typed loosely
        async with _translate(), _group_errors(group):
            page = await client.xpending_range(
                key, group, min=cursor, max="+", count=count, idle=idle_ms
            )
            others = [p["message_id"] for p in page if p["consumer"] != consumer]
            claimed = await client.xclaim(key, group, consumer, idle_ms, others) if others else []
            first = await client.xrange(key, count=1) if others else []
        next_cursor = f"({page[-1]['message_id']}" if len(page) == count else "-"
        got = {eid: fields for eid, fields in claimed}
        oldest = Position.parse(first[0][0]) if first else None
        entries: list[Entry] = []
        for eid in others:
            position = Position.parse(eid) or Position(0, 0)
            if got.get(eid):
                entries.append(_entry(eid, got[eid]))
            elif eid not in got and oldest is not None and position >= oldest:
                continue  # another consumer took it first
            else:  # trimmed: Redis dropped it from the pending list (or returned it empty)
                entries.append(Entry(position, None))
        return next_cursor, entries

    async def ack(self, project_id: str, group: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        async with _translate(), _group_errors(group):
            return int(await self._client.xack(stream_key(project_id), group, *ids))

    async def group_pending(self, project_id: str, group: str) -> int:
        """How many entries the group's consumers hold unacknowledged, together."""
        async with _translate(), _group_errors(group):
            summary = await self._client.xpending(stream_key(project_id), group)
        return int(summary["pending"])

    async def pending(self, project_id: str, group: str, consumer: str) -> int:
        """How many entries this consumer holds unacknowledged."""
        async with _translate(), _group_errors(group):
            summary = await self._client.xpending(stream_key(project_id), group)
        found = (c["pending"] for c in summary["consumers"] or () if c["name"] == consumer)
        return int(next(found, 0))


def _iso(when: datetime) -> str:
    """An event's `published_at`: ISO 8601 in UTC to the millisecond, `Z` for the zone."""
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _pairs(flat: list[str] | None) -> dict[str, str] | None:
    """A script's `[field, value, ...]` as a dict (None for an entry without fields)."""
    return dict(zip(flat[::2], flat[1::2], strict=True)) if flat else None


async def _reply(conn: AbstractConnection) -> object:
    try:
        return await conn.read_response()
    except ResponseError as e:
        return e


def _entries(reply: Any) -> list[Entry]:
    """XREAD/XREADGROUP's `[[key, [(id, fields), ...]]]` (empty when the wait timed out)."""
    return [_entry(eid, fields) for _, items in reply or () for eid, fields in items]


def _entry(entry_id: str, fields: dict[str, str] | None) -> Entry:
    position = Position.parse(entry_id) or Position(0, 0)
    if not fields or not fields.keys() >= _EVENT_FIELDS:  # trimmed, or not written by us
        return Entry(position, None)
    event = StoredEvent(
        seq=position.seq,
        id=fields["event_id"],
        topic=fields["topic"],
        payload=fields["payload"],
        publish_time=from_epoch_ms(position.ms),
    )
    return Entry(position, event)


def _refusal(error: ResponseError) -> Literal["BUSYGROUP", "NOGROUP"] | None:
    """Which of the refusals we expect `error` is. redis-py has no exception class for these,
    so they are told apart by the reply's text, here and nowhere else:
    - BUSYGROUP: XGROUP CREATE of a group that exists ("BUSYGROUP Consumer Group name already
      exists");
    - NOGROUP: a group command on a missing group or stream ("NOGROUP No such key 'k' or
      consumer group 'g' ..."), or XINFO GROUPS (our read script) on a missing stream
      ("ERR no such key", which redis-py gives without its "ERR ").
    """
    text = str(error)
    if text.startswith("BUSYGROUP"):
        return "BUSYGROUP"
    if text.startswith("NOGROUP") or "no such key" in text:
        return "NOGROUP"
    return None


@asynccontextmanager
async def _translate() -> AsyncIterator[None]:
    try:
        yield
    except _DOWN as e:
        raise RedisDown("Redis is unavailable; retry the call") from e
    except _TRANSIENT as e:
        raise Unavailable(f"Redis cannot serve this now ({e}); retry the call") from e


@asynccontextmanager
async def _group_errors(group: str) -> AsyncIterator[None]:
    """A group that vanished (its stream was deleted) ends the subscription; subscribing again
    creates it anew. Anything else Redis refuses (say, the key holds something other than a
    stream) is a state the caller cannot fix by retrying: FAILED_PRECONDITION."""
    try:
        yield
    except _TRANSIENT:
        raise  # retryable: _translate makes it UNAVAILABLE
    except ResponseError as e:
        if _refusal(e) == "NOGROUP":
            raise Unavailable(f"consumer group {group!r} no longer exists; subscribe again") from e
        raise FailedPrecondition(f"Redis refused the consumer group command: {e}") from e
