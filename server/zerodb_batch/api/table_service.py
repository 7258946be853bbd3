"""TableService: create, list and delete tables, batches of table operations, streamed row loads."""

from __future__ import annotations

from collections.abc import AsyncIterator

from zerodb.v1 import table_pb2, table_pb2_grpc
from zerodb_batch import limits
from zerodb_batch.api import Ctx
from zerodb_batch.api.load_engine import LoadEngine
from zerodb_batch.api.table_batch import BatchRun
from zerodb_batch.domain.page_token import PageTokens, page_size
from zerodb_batch.domain.table_batch import plan
from zerodb_batch.domain.table_ops import check_table_name, parse_create
from zerodb_batch.domain.timestamps import to_timestamp
from zerodb_batch.domain.validate import Checker
from zerodb_batch.storage import table_load, tables
from zerodb_batch.storage.pool import Database
from zerodb_batch.storage.tables import TableInfo


class TableServicer(table_pb2_grpc.TableServiceServicer):
    def __init__(
        self, db: Database, tokens: PageTokens, concurrency: int, max_message_bytes: int
    ) -> None:
        self._db = db
        self._tokens = tokens
        self._concurrency = concurrency  # of a parallel batch's reads
        self._max_bytes = max_message_bytes  # of a BatchQuery's answer

    async def CreateTable(
        self, request: table_pb2.CreateTableRequest, context: Ctx
    ) -> table_pb2.CreateTableResponse:
        spec = parse_create(request)
        # Autocommit, outside any transaction: the indexes are built CONCURRENTLY.
        async with self._db.connection() as conn:
            created = await tables.create(conn, request.project_id, spec)
        return table_pb2.CreateTableResponse(table=to_message(created))

    async def ListTables(
        self, request: table_pb2.ListTablesRequest, context: Ctx
    ) -> table_pb2.ListTablesResponse:
        checker = Checker("")
        size = page_size(checker, request.page_size, limits.DEFAULT_TABLES_PAGE_SIZE)
        checker.raise_if_any("the list request is invalid")
        after = self._tokens.decode(request, (str,))
        async with self._db.connection() as conn:
            # One table more than the page says whether another page follows.
            found = await tables.list_page(
                conn, request.project_id, str(after[0]) if after else None, size + 1
            )
        page, more = found[:size], len(found) > size
        return table_pb2.ListTablesResponse(
            tables=[to_message(info) for info in page],
            next_page_token=self._tokens.encode(request, (page[-1].name,)) if more else "",
        )

    async def DeleteTable(
        self, request: table_pb2.DeleteTableRequest, context: Ctx
    ) -> table_pb2.DeleteTableResponse:
        checker = Checker("")
        check_table_name(checker, "name", request.name)
        checker.raise_if_any("the table name is invalid")
        async with self._db.connection() as conn:  # autocommit: indexes dropped CONCURRENTLY
            deleted = await tables.delete(conn, request.project_id, request.name)
        return table_pb2.DeleteTableResponse(rows_deleted=deleted)

    async def BatchQuery(
        self, request: table_pb2.BatchQueryRequest, context: Ctx
    ) -> table_pb2.BatchQueryResponse:
        run = BatchRun(request, plan(request), self._concurrency, self._max_bytes)
        return await run.run(self._db)

    async def StreamInsertRows(
        self, request_iterator: AsyncIterator[table_pb2.StreamInsertRowsRequest], context: Ctx
    ) -> table_pb2.StreamInsertRowsResponse:
        writer = table_load.RowLoadWriter()
        response: table_pb2.StreamInsertRowsResponse = await LoadEngine(self._db, writer).run(
            request_iterator
        )
        await table_load.analyze_after(self._db, writer)
        return response


def to_message(info: TableInfo) -> table_pb2.Table:
    return table_pb2.Table(
        name=info.name,
        description=info.description,
        create_time=to_timestamp(info.create_time),
        indexed_fields=info.indexed_fields,
    )
