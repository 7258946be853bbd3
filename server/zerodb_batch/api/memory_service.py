"""MemoryService: batch upsert, update and delete, reads by id and by page, streamed loads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

from zerodb.v1 import memory_pb2, memory_pb2_grpc
from zerodb_batch import limits
from zerodb_batch.api import Ctx, results
from zerodb_batch.api.load_engine import LoadEngine
from zerodb_batch.domain.memory import MEMORY, MemoryColumns, write_order
from zerodb_batch.domain.memory_list import parse_list, position
from zerodb_batch.domain.memory_update import UpdateParser
from zerodb_batch.domain.page_token import PageTokens
from zerodb_batch.domain.records import RecordParser
from zerodb_batch.domain.struct_json import to_struct
from zerodb_batch.domain.timestamps import to_timestamp
from zerodb_batch.domain.validate import check_batch_size, check_ids, check_request_id
from zerodb_batch.storage import memories
from zerodb_batch.storage.idempotency import write_once
from zerodb_batch.storage.pool import Conn, Database

WRITE_SLICE = 125  # items validated per upsert or update statement; the last may be smaller
_UPSERTED = {results.INSERTED: "inserted", results.UPDATED: "updated", results.FAILED: "failed"}
_UPDATED = {results.UPDATED: "updated", results.NOT_FOUND: "not_found", results.FAILED: "failed"}
_DELETED = {results.DELETED: "deleted", results.NOT_FOUND: "not_found"}


class MemoryServicer(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(self, db: Database, tokens: PageTokens) -> None:
        self._db = db
        self._tokens = tokens

    async def BatchUpsertMemories(
        self, request: memory_pb2.BatchUpsertMemoriesRequest, context: Ctx
    ) -> memory_pb2.BatchUpsertMemoriesResponse:
        check_batch_size("records", len(request.records), limits.MAX_MEMORY_UPSERT)
        check_request_id(request.request_id)
        records = request.records
        parser = RecordParser(
            records,
            MEMORY,
            MemoryColumns(),
            field_name="records",
            partial=request.partial_success,
            order=write_order(records),  # validated, and so written, in lock order
        )

        async def write(conn: Conn) -> memory_pb2.BatchUpsertMemoriesResponse:
            # Each slice's upsert runs in PostgreSQL while the next slice is validated here; an
            # atomic batch with an invalid record raises, and the transaction rolls back.
            batch, sent = await parser.send_in_slices(
                WRITE_SLICE, partial(memories.send_upsert, conn, request.project_id)
            )
            outcomes = results.Outcomes(len(records), batch)
            written: dict[str, bool] = {}
            for cur in sent:
                written.update(await memories.upsert_sent(cur))
            for index, memory_id in zip(batch.rows.index, batch.rows.ids, strict=True):
                outcome = results.INSERTED if written[memory_id] else results.UPDATED
                outcomes.set(index, memory_id, outcome)
            response = memory_pb2.BatchUpsertMemoriesResponse()
            return results.fill(response, outcomes, _UPSERTED, request.result_view)

        done = await write_once(
            self._db, request, memory_pb2.BatchUpsertMemoriesResponse, write, pipelined=True
        )
        return done.response

    async def BatchGetMemories(
        self, request: memory_pb2.BatchGetMemoriesRequest, context: Ctx
    ) -> memory_pb2.BatchGetMemoriesResponse:
        check_batch_size("ids", len(request.ids), limits.MAX_MEMORY_GET)
        ids = list(request.ids)  # once: each pass over the message's field makes every str anew
        check_ids("ids", ids)
        async with self._db.connection() as conn:
            found = await memories.get(conn, request.project_id, ids)
        return memory_pb2.BatchGetMemoriesResponse(
            memories=[to_message(found[i]) for i in ids if i in found],
            not_found=[i for i in ids if i not in found],
        )

    async def BatchUpdateMemories(
        self, request: memory_pb2.BatchUpdateMemoriesRequest, context: Ctx
    ) -> memory_pb2.BatchUpdateMemoriesResponse:
        check_batch_size("updates", len(request.updates), limits.MAX_MEMORY_UPDATE)
        check_request_id(request.request_id)
        parser = UpdateParser(request)

        async def write(conn: Conn) -> memory_pb2.BatchUpdateMemoriesResponse:
            # As upserts: each slice's statement runs while the next slice is validated.
            parsed, sent = await parser.send_in_slices(
                WRITE_SLICE, partial(memories.send_update, conn, request.project_id)
            )
            missing = {i for cur in sent for i in await memories.missing(cur)}
            outcomes = results.Outcomes(len(request.updates), parsed)
            for index, memory_id in zip(parsed.rows.index, parsed.rows.ids, strict=True):
                outcome = results.NOT_FOUND if memory_id in missing else results.UPDATED
                outcomes.set(index, memory_id, outcome)
            response = memory_pb2.BatchUpdateMemoriesResponse()
            return results.fill(response, outcomes, _UPDATED, request.result_view)

        # Updates that fit one slice are one statement: without a request_id, its own
        # transaction (one round trip, as a single update usually is).
        done = await write_once(
            self._db,
            request,
            memory_pb2.BatchUpdateMemoriesResponse,
            write,
            pipelined=True,
            one_statement=len(request.updates) <= WRITE_SLICE,
        )
        return done.response

    async def BatchDeleteMemories(
        self, request: memory_pb2.BatchDeleteMemoriesRequest, context: Ctx
    ) -> memory_pb2.BatchDeleteMemoriesResponse:
        check_batch_size("ids", len(request.ids), limits.MAX_MEMORY_DELETE)
        check_request_id(request.request_id)
        ids = list(request.ids)  # once: each pass over the message's field makes every str anew
        check_ids("ids", ids)

        async def write(conn: Conn) -> memory_pb2.BatchDeleteMemoriesResponse:
            deleted = await memories.delete(conn, request.project_id, ids)
            outcomes = results.delete_outcomes(ids, deleted)
            response = memory_pb2.BatchDeleteMemoriesResponse()
            return results.fill(response, outcomes, _DELETED, request.result_view)

        done = await write_once(
            self._db,
            request,
            memory_pb2.BatchDeleteMemoriesResponse,
            write,
            pipelined=True,
            one_statement=True,
        )
        return done.response

    async def ListMemories(
        self, request: memory_pb2.ListMemoriesRequest, context: Ctx
    ) -> memory_pb2.ListMemoriesResponse:
        query = parse_list(request, self._tokens)
        async with self._db.connection() as conn:
            # One row more than the page says whether another page follows.
            rows = await memories.list_page(
                conn, request.project_id, query.params, query.page_size + 1
            )
        page, token = self._tokens.page(
            request, rows, query.page_size, lambda row: position(row.create_time, row.id)
        )
        return memory_pb2.ListMemoriesResponse(
            memories=[to_message(row) for row in page], next_page_token=token
        )

    async def StreamUpsertMemories(
        self, request_iterator: AsyncIterator[memory_pb2.StreamUpsertMemoriesRequest], context: Ctx
    ) -> memory_pb2.StreamUpsertMemoriesResponse:
        response: memory_pb2.StreamUpsertMemoriesResponse = await LoadEngine(
            self._db, memories.MemoryLoadWriter()
        ).run(request_iterator)
        return response


def to_message(row: memories.MemoryRow) -> memory_pb2.Memory:
    return memory_pb2.Memory(
        id=row.id,
        content=row.content,
        memory_type=row.memory_type,
        importance=row.importance,
        tags=row.tags,
        metadata=to_struct(row.metadata),
        session_id=row.session_id or "",
        agent_id=row.agent_id or "",
        entity_id=row.entity_id or "",
        create_time=to_timestamp(row.create_time),
        update_time=to_timestamp(row.update_time),
    )
