"""Running a BatchQuery: reads on one snapshot, in order or concurrently; writes in order, in one
transaction; `stop_on_error` and `atomic` applied alike to every failure.

Tables are resolved once for the whole batch, before any operation runs: the partial field
indexes can serve a query only when its table id is known while the statement is planned.
An operation that is malformed or names an unknown table fails at its turn, as if it had run: a
parallel batch starts its operations in input order, so everything before a failure has started
and nothing after it has, and `stop_on_error` skips exactly what a sequential batch would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

from zerodb.v1 import table_pb2
from zerodb_batch.api.operation_results import BatchResults, add_rows
from zerodb_batch.domain.table_batch import Planned, missing_tables, read_only, tables_named
from zerodb_batch.domain.table_ops import CountOp, InsertOp, Operation, QueryOp, UpdateOp
from zerodb_batch.errors import InvalidArgument, NotFound, ResourceExhausted, ZeroDBError
from zerodb_batch.storage import table_rows, tables
from zerodb_batch.storage.idempotency import write_once
from zerodb_batch.storage.pool import Conn, Database
from zerodb_batch.storage.snapshot import SharedSnapshot, shared_snapshot, snapshot_reads
from zerodb_batch.storage.tables import TableInfo

# What one operation can fail with while it runs; anything else (the database unreachable, a
# deadlock) fails the whole call.
_OPERATION_ERRORS = (InvalidArgument, NotFound)


class _RollBack(Exception):
    """Leaves a failed atomic batch's savepoint, rolling every operation back."""


class _Failed(Exception):
    """An operation failed inside its own savepoint (already recorded): roll the savepoint back."""


class BatchRun:
    """One BatchQuery call."""

    def __init__(
        self,
        request: table_pb2.BatchQueryRequest,
        planned: Sequence[Planned],
        concurrency: int,
        max_bytes: int,
    ) -> None:
        self._request = request
        self._planned = list(planned)
        self._results = BatchResults(planned)
        self._concurrency = concurrency
        self._max_bytes = max_bytes  # of the response message
        self._tables: dict[str, TableInfo] = {}
        self._failed = False
        self._stopped = False

    async def run(self, db: Database) -> table_pb2.BatchQueryResponse:
        if not read_only(self._planned):
            done = await write_once(db, self._request, table_pb2.BatchQueryResponse, self._write)
            return done.response
        runnable = sum(p.operation is not None for p in self._planned)
        if self._request.parallel and runnable > 1:
            async with shared_snapshot(db, self._concurrency) as snapshot:
                self._resolve(await snapshot.run(self._found))
                await self._concurrently(snapshot)
        else:
            async with snapshot_reads(db) as conn:
                self._resolve(await self._found(conn))
                await self._pipelined(conn)
        return self._response()

    async def _write(self, conn: Conn) -> table_pb2.BatchQueryResponse:
        """The batch inside write_once's transaction (which also records it for retries)."""
        self._resolve(await self._found(conn))
        if not self._request.atomic:
            await self._in_order(conn, savepoints=True)
            return self._response()
        try:
            async with conn.transaction():  # a savepoint: the claim of request_id stays
                await self._in_order(conn, savepoints=False)
                if self._failed:
                    raise _RollBack
        except _RollBack:
            pass
        return self._response()

    async def _found(self, conn: Conn) -> dict[str, TableInfo]:
        names = tables_named(self._planned)
        return await tables.resolve(conn, self._request.project_id, names) if names else {}

    def _resolve(self, found: dict[str, TableInfo]) -> None:
        self._tables = found
        self._planned = missing_tables(self._planned, found)

    def _response(self) -> table_pb2.BatchQueryResponse:
        """The answer; ResourceExhausted if it is more than a message may hold (raised inside a
        batch's transaction, so its writes are rolled back: a client never hears of a failure
        that committed)."""
        if self._failed and self._request.atomic:
            self._results.roll_back()
        response = self._results.response()
        if (size := response.ByteSize()) > self._max_bytes:
            raise ResourceExhausted(
                f"the answer would be {size} bytes, more than the {self._max_bytes} a message may "
                "hold; nothing was written. Ask for fewer rows (limit), fewer fields "
                "(projection), or split the batch",
                reason="RESPONSE_TOO_LARGE",
                metadata={"max": self._max_bytes, "actual": size},
            )
        return response

    def _turns(self) -> Iterator[Planned]:
        """The operations to run, in order. One that cannot run (malformed, or an unknown table)
        fails at its turn; once a failure stops the batch, nothing more comes."""
        for planned in self._planned:
            if self._stopped:
                return
            if planned.operation is None:
                self._fail(planned, planned.error)
            else:
                yield planned

    async def _in_order(self, conn: Conn, *, savepoints: bool) -> None:
        """Each operation in turn. Only an update can leave the transaction failed (a row that
        does not fit it), so only an update needs a savepoint of its own to fail alone."""
        for planned in self._turns():
            if savepoints and isinstance(planned.operation, UpdateOp):
                try:
                    async with conn.transaction():
                        await self._run_one(conn, planned, reraise=True)
                except _Failed:
                    pass  # recorded; the savepoint is rolled back
            else:
                await self._run_one(conn, planned)

    async def _run_one(self, conn: Conn, planned: Planned, *, reraise: bool = False) -> None:
        """Run the operation and record how it ended. With `reraise`, a failure of its own is
        also raised (as _Failed), to roll back the savepoint it runs in."""
        assert planned.operation is not None
        started = time.perf_counter()
        result = self._results.result(planned.index)
        try:
            await execute(conn, self._tables[planned.table], planned.operation, result)
        except _OPERATION_ERRORS as e:
            self._fail(planned, e, _ms_since(started))
            if reraise:
                raise _Failed from e
            return
        self._results.succeeded(planned.index, _ms_since(started))

    async def _pipelined(self, conn: Conn) -> None:
        """Reads in order on a pipelined connection: every one is sent (and the next composed
        while PostgreSQL runs it) before the first answer is read. A read only fails before it
        runs (malformed, or an unknown table), so what to skip is known while sending. An
        operation's time runs from its sending to its answer."""
        sent = []
        for planned in self._turns():
            assert planned.operation is not None
            started = time.perf_counter()
            table = self._tables[planned.table]
            sent.append((planned, started, await send_read(conn, table, planned.operation)))
        for planned, started, fill in sent:
            await fill(self._results.result(planned.index))
            self._results.succeeded(planned.index, _ms_since(started))

    async def _concurrently(self, snapshot: SharedSnapshot) -> None:
        """Start the operations in input order, at most `concurrency` at a time."""
        slots = asyncio.Semaphore(self._concurrency)
        running: list[asyncio.Task[None]] = []
        try:
            for planned in self._turns():
                await slots.acquire()
                if self._stopped:  # an operation failed while this one waited for a slot
                    slots.release()
                    break
                running.append(asyncio.create_task(self._read_one(snapshot, planned, slots)))
            await asyncio.gather(*running)
        except BaseException:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise

    async def _read_one(
        self, snapshot: SharedSnapshot, planned: Planned, slots: asyncio.Semaphore
    ) -> None:
        try:
            await snapshot.run(lambda conn: self._run_one(conn, planned))
        except BaseException:
            self._stopped = True  # the call fails: start nothing more
            raise
        finally:
            slots.release()

    def _fail(self, planned: Planned, error: ZeroDBError | None, elapsed_ms: float = 0.0) -> None:
        assert error is not None
        self._results.failed(planned.index, error, elapsed_ms)
        self._failed = True
        if self._request.stop_on_error or self._request.atomic:
            self._stopped = True


Fill = Callable[[table_pb2.OperationResult], Awaitable[None]]


async def send_read(conn: Conn, table: TableInfo, op: Operation) -> Fill:
    """Send a query or count without waiting; the function returned fills its result."""
    if isinstance(op, QueryOp):
        page = await table_rows.send_query(conn, table, op.query)

        async def rows(result: table_pb2.OperationResult) -> None:
            found = await page.result()
            add_rows(result, found.rows)
            result.has_more = found.has_more

        return rows
    assert isinstance(op, CountOp)
    counted = await table_rows.send_count(conn, table, op.filter)

    async def count(result: table_pb2.OperationResult) -> None:
        result.count = await counted.result()

    return count


async def execute(
    conn: Conn, table: TableInfo, op: Operation, result: table_pb2.OperationResult
) -> None:
    """Run one operation on `conn`, in the caller's transaction, into its `result`."""
    if isinstance(op, QueryOp | CountOp):
        await (await send_read(conn, table, op))(result)
    elif isinstance(op, InsertOp):
        ids = await table_rows.insert(conn, table, op.rows)
        result.row_ids.extend(ids)
        result.inserted = len(ids)
    elif isinstance(op, UpdateOp):
        result.matched, result.modified = await table_rows.update(conn, table, op.filter, op.update)
    else:
        result.deleted = await table_rows.delete(conn, table, op.filter)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
