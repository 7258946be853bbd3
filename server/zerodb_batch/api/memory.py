"""MemoryService: batch upsert, update and delete, reads by id and by page, streamed loads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import grpc
from google.protobuf import timestamp_pb2
from psycopg_pool import AsyncConnectionPool

from zerodb.v1 import common_pb2, memory_pb2, memory_pb2_grpc
from zerodb_batch import limits
from zerodb_batch.api import results
from zerodb_batch.api.memory_stream import MemoryLoad
from zerodb_batch.domain.memory import MemoryColumns, ParsedBatch, RecordParser
from zerodb_batch.domain.memory_query import parse_list
from zerodb_batch.domain.memory_update import ParsedUpdates, parse_updates
from zerodb_batch.domain.validate import (
    check_batch_size,
    check_ids,
    check_request_id,
    dict_to_struct,
)
from zerodb_batch.storage import memories
from zerodb_batch.storage.idempotency import Idempotency
from zerodb_batch.storage.pool import Conn, connection, pipelined_transaction, transaction

# Generic in the type stubs only; quoted so nothing subscripts the runtime class.
Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class MemoryServicer(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(self, pool: AsyncConnectionPool[Conn]) -> None:
        self._pool = pool

    async def BatchUpsertMemories(
        self, request: memory_pb2.BatchUpsertMemoriesRequest, context: Ctx
    ) -> memory_pb2.BatchUpsertMemoriesResponse:
        check_batch_size("records", len(request.records), limits.MAX_MEMORY_UPSERT)
        check_request_id(request.request_id)
        parser = RecordParser(
            request.records, MemoryColumns(), field_name="records", partial=request.partial_success
        )
        async with pipelined_transaction(self._pool) as conn:
            idem = Idempotency(conn, request.project_id, "BatchUpsertMemories", request)
            if replay := await idem.replay(memory_pb2.BatchUpsertMemoriesResponse):
                return replay
            # Each slice's upsert runs in PostgreSQL while the next slice is validated here.
            sent = []
            for stop in _slice_ends(len(request.records)):
                first = len(parser.batch.rows)
                parser.parse(stop)
                rows = parser.batch.rows.since(first)
                if parser.writable:  # else an atomic batch fails in finish(): no more writes
                    sent.append(await memories.send_upsert(conn, request.project_id, rows))
            batch = parser.finish()  # atomic + invalid: raises, and the transaction rolls back
            written: dict[str, bool] = {}
            for cur in sent:
                written.update(await memories.upsert_sent(cur))
            response = upsert_response(batch, written, len(request.records))
            await idem.record(response)
        return response

    async def BatchGetMemories(
        self, request: memory_pb2.BatchGetMemoriesRequest, context: Ctx
    ) -> memory_pb2.BatchGetMemoriesResponse:
        check_batch_size("ids", len(request.ids), limits.MAX_MEMORY_GET)
        check_ids("ids", request.ids)
        async with connection(self._pool) as conn:
            found = await memories.get(conn, request.project_id, request.ids)
        return memory_pb2.BatchGetMemoriesResponse(
            memories=[to_message(found[i]) for i in request.ids if i in found],
            not_found=[i for i in request.ids if i not in found],
        )

    async def BatchUpdateMemories(
        self, request: memory_pb2.BatchUpdateMemoriesRequest, context: Ctx
    ) -> memory_pb2.BatchUpdateMemoriesResponse:
        check_batch_size("updates", len(request.updates), limits.MAX_MEMORY_UPDATE)
        check_request_id(request.request_id)
        parsed = parse_updates(request)
        async with transaction(self._pool) as conn:
            idem = Idempotency(conn, request.project_id, "BatchUpdateMemories", request)
            if replay := await idem.replay(memory_pb2.BatchUpdateMemoriesResponse):
                return replay
            found = await memories.update(conn, request.project_id, parsed.rows)
            response = update_response(parsed, found, len(request.updates))
            await idem.record(response)
        return response

    async def BatchDeleteMemories(
        self, request: memory_pb2.BatchDeleteMemoriesRequest, context: Ctx
    ) -> memory_pb2.BatchDeleteMemoriesResponse:
        check_batch_size("ids", len(request.ids), limits.MAX_MEMORY_DELETE)
        check_request_id(request.request_id)
        check_ids("ids", request.ids)
        async with transaction(self._pool) as conn:
            idem = Idempotency(conn, request.project_id, "BatchDeleteMemories", request)
            if replay := await idem.replay(memory_pb2.BatchDeleteMemoriesResponse):
                return replay
            deleted = await memories.delete(conn, request.project_id, request.ids)
            response = delete_response(request.ids, deleted)
            await idem.record(response)
        return response

    async def ListMemories(
        self, request: memory_pb2.ListMemoriesRequest, context: Ctx
    ) -> memory_pb2.ListMemoriesResponse:
        query = parse_list(request)
        async with connection(self._pool) as conn:
            # One row more than the page says whether another page follows.
            rows = await memories.list_page(
                conn, request.project_id, query.params, query.page_size + 1
            )
        page = rows[: query.page_size]
        more = len(rows) > query.page_size
        return memory_pb2.ListMemoriesResponse(
            memories=[to_message(row) for row in page],
            next_page_token=query.next_token(_position(page[-1])) if more else "",
        )

    async def StreamUpsertMemories(
        self, request_iterator: AsyncIterator[memory_pb2.StreamUpsertMemoriesRequest], context: Ctx
    ) -> memory_pb2.StreamUpsertMemoriesResponse:
        return await MemoryLoad(self._pool).run(request_iterator)


def upsert_response(
    batch: ParsedBatch[MemoryColumns], written: dict[str, bool], total: int
) -> memory_pb2.BatchUpsertMemoriesResponse:
    """One result per record in request order, and the counters."""
    unset = common_pb2.OUTCOME_UNSPECIFIED
    outcomes: list[tuple[str, common_pb2.Outcome.ValueType]] = [("", unset)] * total
    for index, memory_id in zip(batch.rows.index, batch.rows.ids, strict=True):
        inserted = written[memory_id]
        outcomes[index] = (memory_id, OUTCOME_INSERTED if inserted else OUTCOME_UPDATED)
    response = memory_pb2.BatchUpsertMemoriesResponse(failed=len(batch.failures))
    add = response.results.add  # building in place: no per-item message copies
    for index, (memory_id, outcome) in enumerate(outcomes):
        if index in batch.failures:
            response.results.append(results.failed(index, "", batch.failures[index]))
        else:
            add(index=index, id=memory_id, outcome=outcome)
    response.ids.extend(item for item, _ in outcomes)
    response.inserted = sum(written.values())
    response.updated = len(batch.rows) - response.inserted
    return response


UPSERT_SLICE = 125  # records validated per upsert statement; the last slice may be smaller


def _slice_ends(total: int) -> list[int]:
    """Where each slice of a batch ends: [125, 250, 375, 500] for 500 records, [] for none."""
    return [min(end, total) for end in range(UPSERT_SLICE, total + UPSERT_SLICE, UPSERT_SLICE)]


OUTCOME_INSERTED, OUTCOME_UPDATED = common_pb2.OUTCOME_INSERTED, common_pb2.OUTCOME_UPDATED


def update_response(
    parsed: ParsedUpdates, found: set[str], total: int
) -> memory_pb2.BatchUpdateMemoriesResponse:
    """One result per update in request order: UPDATED, NOT_FOUND or (partial) FAILED."""
    items: list[common_pb2.ItemResult | None] = [None] * total
    for index, violations in parsed.failures.items():
        items[index] = results.failed(index, "", violations)
    for index, memory_id in zip(parsed.rows.index, parsed.rows.ids, strict=True):
        outcome = common_pb2.OUTCOME_UPDATED if memory_id in found else common_pb2.OUTCOME_NOT_FOUND
        items[index] = results.ok(index, memory_id, outcome)
    return memory_pb2.BatchUpdateMemoriesResponse(
        updated=len(found),
        not_found=len(parsed.rows) - len(found),
        failed=len(parsed.failures),
        results=[item for item in items if item is not None],
    )


def delete_response(
    ids: Sequence[str], deleted: set[str]
) -> memory_pb2.BatchDeleteMemoriesResponse:
    """One result per id in request order; an id repeated in the request is deleted once."""
    items, counted = [], set()
    for index, memory_id in enumerate(ids):
        gone = memory_id in deleted and memory_id not in counted
        counted.add(memory_id)
        outcome = common_pb2.OUTCOME_DELETED if gone else common_pb2.OUTCOME_NOT_FOUND
        items.append(results.ok(index, memory_id, outcome))
    return memory_pb2.BatchDeleteMemoriesResponse(
        deleted=len(deleted), not_found=len(ids) - len(deleted), results=items
    )


def _position(row: memories.MemoryRow) -> tuple[datetime, str]:
    """Where a page ends: the keyset (create_time, id) of its last row."""
    return row[9], row[0]


def to_message(row: memories.MemoryRow) -> memory_pb2.Memory:
    (mid, content, mtype, importance, tags, metadata, session, agent, entity, created, updated) = (
        row
    )
    return memory_pb2.Memory(
        id=mid,
        content=content,
        memory_type=mtype,
        importance=importance,
        tags=tags,
        metadata=dict_to_struct(metadata),
        session_id=session or "",
        agent_id=agent or "",
        entity_id=entity or "",
        create_time=_timestamp(created),
        update_time=_timestamp(updated),
    )


def _timestamp(value: object) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)  # type: ignore[arg-type]
    return ts
