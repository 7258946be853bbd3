"""EventService: batch publish through the outbox, subscriptions, acknowledgements, listing."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from zerodb.v1 import event_pb2, event_pb2_grpc
from zerodb_batch import limits
from zerodb_batch.api import Ctx, results
from zerodb_batch.domain.event import Position, StoredEvent, parse_events
from zerodb_batch.domain.event_requests import (
    POSITION_SHAPE,
    Options,
    check_ack,
    list_filters,
    subscription_options,
)
from zerodb_batch.domain.page_token import PageTokens
from zerodb_batch.domain.timestamps import to_timestamp
from zerodb_batch.domain.validate import check_batch_size, check_request_id
from zerodb_batch.errors import ResourceExhausted, Unavailable
from zerodb_batch.events.relay import Relay
from zerodb_batch.events.streams import Streams
from zerodb_batch.events.subscription import Heartbeat, Item, subscribe
from zerodb_batch.observability import calls
from zerodb_batch.storage import event_groups, outbox
from zerodb_batch.storage.idempotency import write_once
from zerodb_batch.storage.pool import Conn, Database

SHUTTING_DOWN = "server shutting down; subscribe again"
LIST_CHUNK = 100  # events read from PostgreSQL at a time for a ListEvents page
# Payload per ListEvents page, whatever its page_size: well under the 4 MiB that gRPC clients
# accept by default.
LIST_PAGE_BYTES = 2 * 1024 * 1024
_PUBLISHED = {results.INSERTED: "published", results.FAILED: "failed"}


class EventServicer(event_pb2_grpc.EventServiceServicer):
    def __init__(
        self,
        db: Database,
        tokens: PageTokens,
        streams: Streams,
        relay: Relay,
        max_subscriptions: int,
    ) -> None:
        self._db = db
        self._tokens = tokens
        self._streams = streams
        self._relay = relay
        self._max_subscriptions = max_subscriptions
        self._subscriptions = 0  # open now
        self._groups: Counter[tuple[str, str]] = Counter()  # (project, group): subscriptions
        self._closing = asyncio.Event()

    async def shut_down(self) -> None:
        """End every subscription now (UNAVAILABLE: resubscribe) and refuse new ones."""
        self._closing.set()
        await asyncio.sleep(0)  # let them see it before the server starts draining

    async def BatchPublishEvents(
        self, request: event_pb2.BatchPublishEventsRequest, context: Ctx
    ) -> event_pb2.BatchPublishEventsResponse:
        check_batch_size("events", len(request.events), limits.MAX_EVENTS_PUBLISH)
        check_request_id(request.request_id)
        batch = parse_events(request.events, partial=request.partial_success)
        written: list[StoredEvent] = []

        async def write(conn: Conn) -> event_pb2.BatchPublishEventsResponse:
            # The events table is the outbox: an event and its pending relay are one row,
            # committed (or not) together with the idempotency record.
            written.extend(await outbox.insert(conn, request.project_id, batch.rows))
            outcomes = results.Outcomes(len(request.events), batch)
            outcomes.set_all(batch.rows.index, (e.id for e in written), results.INSERTED)
            response = event_pb2.BatchPublishEventsResponse()
            return results.fill(response, outcomes, _PUBLISHED, request.result_view)

        # One statement: without a request_id it commits alone (one round trip); with one, it
        # is pipelined with the id's claim (BEGIN goes out with them, then the COMMIT).
        done = await write_once(
            self._db,
            request,
            event_pb2.BatchPublishEventsResponse,
            write,
            pipelined=True,
            one_statement=True,
        )
        response = done.response
        # After commit: append to the stream now (for a replayed request, whatever the project
        # has pending); if Redis is down the relay loops do it later.
        if response.published and not await self._relay.after_publish(request.project_id, written):
            response.pending_relay = response.published
        return response

    async def SubscribeEvents(
        self, request: event_pb2.SubscribeEventsRequest, context: Ctx
    ) -> AsyncIterator[event_pb2.SubscribeEventsResponse]:
        options = subscription_options(request)
        if self._closing.is_set():
            raise Unavailable(SHUTTING_DOWN)
        if self._subscriptions >= self._max_subscriptions:
            raise ResourceExhausted(
                f"this server has {self._max_subscriptions} subscriptions open, its maximum;"
                " retry later or on another server"
            )
        with self._open(options):
            items = subscribe(self._db, self._streams, options)
            async for item in _until(self._closing, items):
                yield to_response(item)

    @contextlib.contextmanager
    def _open(self, options: Options) -> Iterator[None]:
        """One subscription open: counted for the limit, the metrics and its consumer group."""
        self._subscriptions += 1
        group = Counter([(options.project_id, options.group)] if options.group else [])
        self._groups += group
        metrics = calls.current_metrics()
        gauge = metrics.subscriptions.labels("group" if group else "tail") if metrics else None
        if gauge is not None:
            gauge.inc()
        try:
            yield
        finally:
            self._subscriptions -= 1
            self._groups -= group  # a group with no subscription left drops out
            if gauge is not None:
                gauge.dec()

    async def group_pending_max(self) -> int:
        """The most entries any consumer group read here holds unacknowledged (for the metrics;
        one XPENDING per group)."""
        groups = list(self._groups)
        counts = [await self._streams.group_pending(project, group) for project, group in groups]
        return max(counts, default=0)

    async def AckEvents(
        self, request: event_pb2.AckEventsRequest, context: Ctx
    ) -> event_pb2.AckEventsResponse:
        check_batch_size("stream_ids", len(request.stream_ids), limits.MAX_ACK_IDS)
        check_ack(request)
        project, group, ids = request.project_id, request.consumer_group, list(request.stream_ids)
        acked = await self._streams.ack(project, group, ids)
        # Events delivered from PostgreSQL (the stream no longer held them) are pending there.
        seqs = [p.seq for p in map(Position.parse, ids) if p is not None]
        async with self._db.connection() as conn:
            acked += await event_groups.ack(conn, project, group, seqs)
        return event_pb2.AckEventsResponse(acked=acked)

    async def ListEvents(
        self, request: event_pb2.ListEventsRequest, context: Ctx
    ) -> event_pb2.ListEventsResponse:
        filters = list_filters(request)
        after = self._tokens.decode(request, POSITION_SHAPE)
        read = functools.partial(
            outbox.page,
            project_id=request.project_id,
            topic=next(iter(filters.topics.exact), None),
            prefix=next(iter(filters.topics.prefixes), ""),
            start=filters.start,
            end=filters.end,
        )
        page, more = await self._read_page(read, int(after[0]) if after else 0, filters.page_size)
        return event_pb2.ListEventsResponse(
            events=[to_event(e) for e in page],
            next_page_token=self._tokens.encode(request, (page[-1].seq,)) if more else "",
        )

    async def _read_page(
        self, read: Callable[..., Awaitable[list[StoredEvent]]], after: int, size: int
    ) -> tuple[list[StoredEvent], bool]:
        """Up to `size` events but about LIST_PAGE_BYTES of payload at most (payloads reach
        64 KiB each), read in chunks so that memory stays bounded too; and whether more follow."""
        page: list[StoredEvent] = []
        payload_bytes = 0
        async with self._db.connection() as conn:
            while len(page) <= size and payload_bytes < LIST_PAGE_BYTES:
                chunk = await read(conn, after=after, limit=min(LIST_CHUNK, size + 1 - len(page)))
                page.extend(chunk)
                payload_bytes += sum(len(e.payload) for e in chunk)
                if not chunk or len(page) > size or len(chunk) < LIST_CHUNK:
                    break
                after = chunk[-1].seq
        keep, total = 0, 0
        while keep < min(len(page), size) and (keep == 0 or total < LIST_PAGE_BYTES):
            total += len(page[keep].payload)
            keep += 1
        return page[:keep], len(page) > keep or payload_bytes >= LIST_PAGE_BYTES


async def _until(closing: asyncio.Event, items: AsyncIterator[Item]) -> AsyncIterator[Item]:
    """The items, until `closing` is set: then UNAVAILABLE at once, even mid-read."""
    stop = asyncio.ensure_future(closing.wait())
    step: asyncio.Future[Item] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(items))
            await asyncio.wait((step, stop), return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                raise Unavailable(SHUTTING_DOWN)
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        # Also when the caller went away mid-read: the read must not outlive the call.
        left = [f for f in (step, stop) if f is not None and not f.done()]
        for future in left:
            future.cancel()
        await asyncio.gather(*left, return_exceptions=True)


def to_response(item: Item) -> event_pb2.SubscribeEventsResponse:
    if isinstance(item, Heartbeat):
        beat = event_pb2.Heartbeat(last_stream_id=str(item.last) if item.last else "")
        beat.server_time.GetCurrentTime()
        return event_pb2.SubscribeEventsResponse(heartbeat=beat)
    return event_pb2.SubscribeEventsResponse(event=to_event(item))


def to_event(e: StoredEvent) -> event_pb2.Event:
    """The stream id is known for every event (`<ms>-<seq>`), relayed yet or not."""
    event = event_pb2.Event(
        id=e.id,
        topic=e.topic,
        stream_id=str(e.position),
        publish_time=to_timestamp(e.publish_time),
    )
    payload = json.loads(e.payload)
    if payload:
        event.event_payload.update(payload)
    return event
