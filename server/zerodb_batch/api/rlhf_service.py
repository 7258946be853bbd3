"""RlhfService: batch logging of interactions, streamed loads, pages, and training-data export."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from zerodb.v1 import rlhf_pb2, rlhf_pb2_grpc
from zerodb_batch import limits
from zerodb_batch.api import Ctx, results
from zerodb_batch.api.load_engine import LoadEngine
from zerodb_batch.domain.ids import new_uuids
from zerodb_batch.domain.interaction import INTERACTION
from zerodb_batch.domain.interaction_query import parse_export, parse_list, position
from zerodb_batch.domain.page_token import PageTokens
from zerodb_batch.domain.records import RecordParser
from zerodb_batch.domain.struct_json import to_struct
from zerodb_batch.domain.timestamps import to_timestamp
from zerodb_batch.domain.validate import check_batch_size, check_request_id
from zerodb_batch.storage import interactions
from zerodb_batch.storage.idempotency import write_once
from zerodb_batch.storage.pool import Conn, Database

COPY_SLICE = 250  # interactions validated between two writes into the batch's COPY
_CREATED = {results.INSERTED: "created", results.FAILED: "failed"}


class RlhfServicer(rlhf_pb2_grpc.RlhfServiceServicer):
    def __init__(self, db: Database, tokens: PageTokens) -> None:
        self._db = db
        self._tokens = tokens

    async def BatchCreateInteractions(
        self, request: rlhf_pb2.BatchCreateInteractionsRequest, context: Ctx
    ) -> rlhf_pb2.BatchCreateInteractionsResponse:
        check_batch_size("interactions", len(request.interactions), limits.MAX_RLHF_INTERACTIONS)
        check_request_id(request.request_id)
        items = request.interactions
        parser = RecordParser(
            items,
            INTERACTION,
            interactions.InteractionCopyRows(request.project_id, new_uuids(len(items))),
            field_name="interactions",
            partial=request.partial_success,
        )

        async def write(conn: Conn) -> rlhf_pb2.BatchCreateInteractionsResponse:
            # Each slice goes into the COPY while the next is validated here; an atomic batch
            # with an invalid interaction raises, which aborts the COPY and the transaction.
            async with interactions.copy_batch(conn) as send:
                batch, _ = await parser.send_in_slices(COPY_SLICE, send)
            outcomes = results.Outcomes(len(items), batch)
            outcomes.set_all(batch.rows.index, batch.rows.ids, results.INSERTED)
            response = rlhf_pb2.BatchCreateInteractionsResponse()
            return results.fill(response, outcomes, _CREATED, request.result_view)

        done = await write_once(self._db, request, rlhf_pb2.BatchCreateInteractionsResponse, write)
        return done.response

    async def StreamCreateInteractions(
        self,
        request_iterator: AsyncIterator[rlhf_pb2.StreamCreateInteractionsRequest],
        context: Ctx,
    ) -> rlhf_pb2.StreamCreateInteractionsResponse:
        response: rlhf_pb2.StreamCreateInteractionsResponse = await LoadEngine(
            self._db, interactions.InteractionLoadWriter()
        ).run(request_iterator)
        return response

    async def ListInteractions(
        self, request: rlhf_pb2.ListInteractionsRequest, context: Ctx
    ) -> rlhf_pb2.ListInteractionsResponse:
        page = parse_list(request, self._tokens)
        async with self._db.connection() as conn:
            # One row more than the page says whether another page follows.
            rows = await interactions.list_page(
                conn, request.project_id, page.params, page.page_size + 1
            )
        shown, token = self._tokens.page(
            request, rows, page.page_size, lambda row: position(row.create_time, row.id)
        )
        return rlhf_pb2.ListInteractionsResponse(
            interactions=[to_message(row) for row in shown], next_page_token=token
        )

    async def ExportInteractions(
        self, request: rlhf_pb2.ExportInteractionsRequest, context: Ctx
    ) -> AsyncIterator[rlhf_pb2.ExportInteractionsResponse]:
        export = parse_export(request)
        # One transaction: the server-side cursor lives in it, and the export is one snapshot.
        # A call that ends early (the client went away) closes the cursor before the connection
        # goes back to the pool: aclosing, not the garbage collector.
        async with (
            self._db.transaction() as conn,
            aclosing(
                interactions.export(
                    conn, request.project_id, export.format, export.pairs, export.params
                )
            ) as lines,
        ):
            async for batch in lines:
                yield rlhf_pb2.ExportInteractionsResponse(lines=batch)


def to_message(row: interactions.InteractionRow) -> rlhf_pb2.Interaction:
    message = rlhf_pb2.Interaction(
        id=row.id,
        prompt=row.prompt,
        response=row.response,
        feedback=row.feedback or "",
        model=row.model or "",
        session_id=row.session_id or "",
        agent_id=row.agent_id or "",
        human_feedback=row.human_feedback or "",
        tags=row.tags,
        context=row.context or "",
        metadata=to_struct(row.metadata),
        create_time=to_timestamp(row.create_time),
    )
    if row.reward is not None:
        message.reward = row.reward
    return message
