"""MemoryService: batch upsert and reads of agent memories."""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2
from psycopg_pool import AsyncConnectionPool

from zerodb.v1 import common_pb2, memory_pb2, memory_pb2_grpc
from zerodb_batch import limits
from zerodb_batch.api import results
from zerodb_batch.domain.memory import ParsedBatch, parse_records
from zerodb_batch.domain.validate import check_batch_size, check_request_id, dict_to_struct
from zerodb_batch.storage import memories
from zerodb_batch.storage.idempotency import Idempotency
from zerodb_batch.storage.pool import Conn, connection, transaction

Ctx = grpc.aio.ServicerContext


class MemoryServicer(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(self, pool: AsyncConnectionPool[Conn]) -> None:
        self._pool = pool

    async def BatchUpsertMemories(
        self, request: memory_pb2.BatchUpsertMemoriesRequest, context: Ctx
    ) -> memory_pb2.BatchUpsertMemoriesResponse:
        check_batch_size("records", len(request.records), limits.MAX_MEMORY_UPSERT)
        check_request_id(request.request_id)
        batch = parse_records(request.records, field_name="records", partial=request.partial_success)
        async with transaction(self._pool) as conn:
            idem = Idempotency(conn, request.project_id, "BatchUpsertMemories", request)
            if replay := await idem.replay(memory_pb2.BatchUpsertMemoriesResponse):
                return replay
            written = await memories.upsert(conn, request.project_id, batch.rows)
            response = upsert_response(batch, written, len(request.records))
            await idem.record(response)
        return response

    async def BatchGetMemories(
        self, request: memory_pb2.BatchGetMemoriesRequest, context: Ctx
    ) -> memory_pb2.BatchGetMemoriesResponse:
        check_batch_size("ids", len(request.ids), limits.MAX_MEMORY_GET)
        async with connection(self._pool) as conn:
            found = await memories.get(conn, request.project_id, request.ids)
        return memory_pb2.BatchGetMemoriesResponse(
            memories=[to_message(found[i]) for i in request.ids if i in found],
            not_found=[i for i in request.ids if i not in found],
        )


def upsert_response(
    batch: ParsedBatch, written: dict[str, bool], total: int
) -> memory_pb2.BatchUpsertMemoriesResponse:
    """One result per record in request order, and the counters."""
    items: list[common_pb2.ItemResult | None] = [None] * total
    for index, violations in batch.failures.items():
        items[index] = results.failed(index, "", violations)
    inserted = 0
    for index, memory_id in zip(batch.rows.index, batch.rows.ids):
        was_inserted = written[memory_id]
        inserted += was_inserted
        outcome = common_pb2.OUTCOME_INSERTED if was_inserted else common_pb2.OUTCOME_UPDATED
        items[index] = results.ok(index, memory_id, outcome)
    done = [item for item in items if item is not None]
    return memory_pb2.BatchUpsertMemoriesResponse(
        inserted=inserted,
        updated=len(batch.rows) - inserted,
        failed=len(batch.failures),
        results=done,
        ids=[item.id for item in done],
    )


def to_message(row: memories.MemoryRow) -> memory_pb2.Memory:
    (mid, content, mtype, importance, tags, metadata, session, agent, entity, created, updated) = row
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
