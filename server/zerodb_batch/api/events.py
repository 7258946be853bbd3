"""EventService: batch publish through the outbox, subscriptions, acknowledgements, listing."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import grpc
from google.protobuf import timestamp_pb2
from psycopg_pool import AsyncConnectionPool

from zerodb.v1 import common_pb2, event_pb2, event_pb2_grpc
from zerodb_batch import limits
from zerodb_batch.api import results
from zerodb_batch.api.event_requests import (
    decode_token,
    encode_token,
    list_filters,
    query_digest,
    subscription_options,
)
from zerodb_batch.domain.events import (
    ParsedEvents,
    Position,
    StoredEvent,
    check_name,
    parse_events,
)
from zerodb_batch.domain.validate import Checker, check_batch_size, check_request_id
from zerodb_batch.errors import ResourceExhausted, Unavailable
from zerodb_batch.events.relay import Relay
from zerodb_batch.events.streams import Streams
from zerodb_batch.events.subscription import Heartbeat, Item, subscribe
from zerodb_batch.storage import events
from zerodb_batch.storage.idempotency import Idempotency
from zerodb_batch.storage.pool import Conn, connection, transaction

Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

SHUTTING_DOWN = "server shutting down; subscribe again"
LIST_CHUNK = 100  # events read from PostgreSQL at a time for a ListEvents page
# Payload per ListEvents page, whatever its page_size: well under the 4 MiB that gRPC clients
# accept by default.
LIST_PAGE_BYTES = 2 * 1024 * 1024


class EventServicer(event_pb2_grpc.EventServiceServicer):
    def __init__(
        self,
        pool: AsyncConnectionPool[Conn],
        streams: Streams,
        relay: Relay,
        max_subscriptions: int,
    ) -> None:
        self._pool = pool
        self._streams = streams
        self._relay = relay
        self._max_subscriptions = max_subscriptions
        self._subscriptions = 0  # open now
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
        # The events table is the outbox: an event and its pending relay are one row, committed
        # (or not) together with the idempotency record.
        async with transaction(self._pool) as conn:
            idem = Idempotency(conn, request.project_id, "BatchPublishEvents", request)
            written: list[StoredEvent] = []
            response = await idem.replay(event_pb2.BatchPublishEventsResponse)
            if response is None:
                written = await events.insert(conn, request.project_id, batch.rows)
                response = publish_response(batch, written, len(request.events))
                await idem.record(response)
        # After commit: append to the stream now; if Redis is down the relay loops do it later.
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
        self._subscriptions += 1
        try:
            items = subscribe(self._pool, self._streams, options)
            async for item in _until(self._closing, items):
                yield to_response(item)
        finally:
            self._subscriptions -= 1

    async def AckEvents(
        self, request: event_pb2.AckEventsRequest, context: Ctx
    ) -> event_pb2.AckEventsResponse:
        check_batch_size("stream_ids", len(request.stream_ids), limits.MAX_ACK_IDS)
        checker = Checker("")
        check_name(checker, "consumer_group", request.consumer_group, limits.MAX_ID_CHARS)
        for i, stream_id in enumerate(request.stream_ids):
            if Position.parse(stream_id) is None:
                checker.add(f"stream_ids[{i}]", "not a stream entry id such as 1718000000000-1")
        checker.raise_if_any("AckEvents request is invalid")
        acked = await self._streams.ack(
            request.project_id, request.consumer_group, list(request.stream_ids)
        )
        return event_pb2.AckEventsResponse(acked=acked)

    async def ListEvents(
        self, request: event_pb2.ListEventsRequest, context: Ctx
    ) -> event_pb2.ListEventsResponse:
        size, topic, start, end = list_filters(request)
        query = query_digest(request)
        after = decode_token(request.page_token, query) if request.page_token else 0
        read = functools.partial(
            events.page,
            project_id=request.project_id,
            topic=next(iter(topic.exact), None),
            prefix=next(iter(topic.prefixes), ""),
            start=start,
            end=end,
        )
        page, more = await self._read_page(read, after, size)
        return event_pb2.ListEventsResponse(
            events=[to_event(e) for e in page],
            next_page_token=encode_token(page[-1].seq, query) if more else "",
        )

    async def _read_page(
        self, read: Callable[..., Awaitable[list[StoredEvent]]], after: int, size: int
    ) -> tuple[list[StoredEvent], bool]:
        """Up to `size` events but about LIST_PAGE_BYTES of payload at most (payloads reach
        64 KiB each), read in chunks so that memory stays bounded too; and whether more follow."""
        page: list[StoredEvent] = []
        payload_bytes = 0
        async with connection(self._pool) as conn:
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


def publish_response(
    batch: ParsedEvents, written: Sequence[StoredEvent], total: int
) -> event_pb2.BatchPublishEventsResponse:
    """One result per event in request order, and the counters."""
    response = event_pb2.BatchPublishEventsResponse(
        published=len(written), failed=len(batch.failures)
    )
    ids = dict(zip(batch.rows.index, (e.id for e in written), strict=True))
    for index in range(total):
        if index in ids:  # added in place: this loop runs for every event published
            response.results.add(index=index, id=ids[index], outcome=common_pb2.OUTCOME_INSERTED)
        else:
            response.results.append(results.failed(index, "", batch.failures[index]))
    response.ids.extend(ids.get(index, "") for index in range(total))
    return response


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
        publish_time=_timestamp(e.publish_time),
    )
    payload = json.loads(e.payload)
    if payload:
        event.event_payload.update(payload)
    return event


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts
