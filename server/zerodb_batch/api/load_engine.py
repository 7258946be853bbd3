"""The streamed-load engine behind every `Stream*` RPC: chunks committed with their load's progress.

Each chunk is one transaction: its records and the load's progress row advanced to the chunk's
offset. So after a broken stream `GetLoad` says exactly which chunks are in; a chunk at or below
that offset is a duplicate from a resumed stream and is skipped, and a chunk past the next offset
is refused, as it would leave a gap. A cancelled stream rolls back the chunk in flight: no chunk
is ever half written.

Memory stays flat however long the stream: the next chunk is decoded, validated and formatted
while the one before it is being written (that overlap keeps PostgreSQL and Python busy at once),
and at most one more waits between the two. Validation works in slices and holds back while the
writer waits on a round trip (BEGIN, progress, COMMIT): those then take a turn of the event loop,
not several slices, and validation fills the time PostgreSQL spends on the data.

What differs between kinds of load (memories, rows, vectors, interactions) is a `LoadWriter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf.message import Message

from zerodb.v1 import common_pb2
from zerodb_batch import limits
from zerodb_batch.api.load_service import check_load_id, to_message
from zerodb_batch.domain.records import ParsedBatch, RecordParser, Rows
from zerodb_batch.domain.rules import Rules
from zerodb_batch.domain.validate import check_batch_size
from zerodb_batch.errors import FailedPrecondition, InvalidArgument, NotFound, Violation
from zerodb_batch.observability import calls, tracing
from zerodb_batch.storage import loads
from zerodb_batch.storage.loads import RetryChunk
from zerodb_batch.storage.pool import Conn, Database

log = logging.getLogger(__name__)

_SLICE = 200  # records validated between two turns of the event loop
CANCEL_GRACE_SECONDS = 0.02  # see LoadEngine.run

C = TypeVar("C", bound=Message)  # a chunk message, e.g. StreamUpsertMemoriesRequest
C_in = TypeVar("C_in", bound=Message, contravariant=True)


class LoadWriter(Protocol[C_in]):
    """One kind of load, for one stream: how its chunks are read, checked and written."""

    @property
    def kind(self) -> str:
        """What GetLoad reports: memories, rows, vectors or interactions."""

    @property
    def rules(self) -> Rules:
        """The rules of the kind's records."""

    @property
    def records_field(self) -> str:
        """The chunk's repeated field of records."""

    @property
    def response_type(self) -> type[Message]:
        """The Stream*Response: load, failures and the chunk counts."""

    def check(self, chunk: C_in) -> None:
        """Chunk fields of this kind beyond the engine's (INVALID_ARGUMENT if bad)."""

    def rows(self, chunk: C_in) -> Rows:
        """An empty sink for the chunk's valid records."""

    def order(self, chunk: C_in) -> Sequence[int] | None:
        """The order in which the chunk's records are validated and written: the kind's lock
        order, as its batches use (None: as sent, for kinds whose rows get new ids)."""

    async def write(self, conn: Conn, rows: Any, started: Callable[[], object]) -> tuple[int, int]:
        """Write a chunk's rows in the chunk's transaction; (inserted, updated). Calls `started`
        once the data is going out. Raises RetryChunk to roll back and be called again."""


@dataclass(frozen=True)
class _Prepared(Generic[C]):
    chunk: C
    batch: ParsedBatch[Any] | None  # None: known to be a duplicate when it arrived, not parsed
    final: bool  # the client marked it the load's last chunk


class _Moved(Exception):
    """Another stream of the same load advanced its progress under this chunk."""


class LoadEngine(Generic[C]):
    """One Stream* call."""

    def __init__(self, db: Database, writer: LoadWriter[C]) -> None:
        self._db = db
        self._writer = writer
        self._held = db.held()  # for chunk transactions; given back when idle
        self._project_id = ""
        self._load_id = ""
        self._progress: loads.LoadProgress | None = None  # as last read or written
        self._opened = False
        self._through = -1  # the highest offset this stream sent (committed or skipped)
        self._final: int | None = None  # the offset of the chunk marked final, once sent
        self._committed = 0
        self._skipped = 0
        self._unrecorded_skips = 0  # duplicates not yet added to the progress row
        self._failures: list[common_pb2.RecordFailure] = []
        self._may_parse = asyncio.Event()  # cleared while the writer waits on a round trip
        self._may_parse.set()
        self._metrics = calls.load_metrics(writer.kind)

    async def run(self, chunks: AsyncIterator[C]) -> Any:
        if self._metrics is not None:
            self._metrics.running.inc()
        try:
            await self._consume(chunks)
            if self._final is None:
                # grpc ends the request iterator alike for a client's clean half-close and for
                # a cancelled call (a cut HTTP body, a lost client, a deadline), whose
                # cancellation reaches this task a moment later. Marking the load DONE at once
                # could win that race, and a cut upload would report DONE. A cancellation
                # arriving during this pause ends the call with the load RUNNING. A stream
                # whose last chunk is marked final needs no guess: that chunk completed it.
                await asyncio.sleep(CANCEL_GRACE_SECONDS)
        except BaseException:
            await self._record_skips()
            raise
        finally:
            if self._metrics is not None:
                self._metrics.running.dec()
        return await self._finish()

    async def _consume(self, chunks: AsyncIterator[C]) -> None:
        """Every chunk of the stream, committed or skipped in order."""
        ready: asyncio.Queue[_Prepared[C] | Exception | None] = asyncio.Queue(maxsize=1)
        reader = asyncio.create_task(self._read_ahead(chunks, ready))
        try:
            while (item := await ready.get()) is not None:
                if isinstance(item, Exception):
                    raise item  # in stream order: every chunk before it is committed
                await self._commit(item)
                if ready.empty():  # waiting on the client: no connection held meanwhile
                    await self._held.release()
        finally:
            try:
                await self._held.release()  # first: a second cancellation must not skip it
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    async def _record_skips(self) -> None:
        """A stream ending in an error still counts the duplicate chunks it skipped since the
        progress row was last written (best effort: the error in flight is what the client
        hears)."""
        if not self._unrecorded_skips or not self._opened:
            return
        try:
            async with self._db.connection() as conn:
                await loads.add_skipped(
                    conn, self._project_id, self._load_id, self._unrecorded_skips
                )
            self._unrecorded_skips = 0
        except Exception:
            log.warning(
                "load %s: %d skipped chunk(s) not counted",
                self._load_id,
                self._unrecorded_skips,
                exc_info=True,
            )

    async def _read_ahead(
        self, chunks: AsyncIterator[C], ready: asyncio.Queue[_Prepared[C] | Exception | None]
    ) -> None:
        """Check and parse each chunk as it arrives; a refusal goes down the queue in order."""
        try:
            async for chunk in chunks:
                await ready.put(await self._prepare(chunk))
        except Exception as e:  # our refusals, and the interceptor's (a foreign project_id)
            await ready.put(e)
            return
        await ready.put(None)

    async def _prepare(self, chunk: C) -> _Prepared[C]:
        """Message-level checks, then the records (skipped for a chunk known to be in)."""
        records = self._records(chunk)
        check_batch_size(self._writer.records_field, len(records), limits.MAX_STREAM_CHUNK_RECORDS)
        offset: int = getattr(chunk, "offset")  # noqa: B009 - every chunk message has these
        load_id: str = getattr(chunk, "load_id")  # noqa: B009
        if offset < 0:
            raise InvalidArgument(
                f"offset must be 0 or more, got {offset}",
                violations=[Violation("offset", "must be 0 or more", "OUT_OF_RANGE")],
            )
        if not self._load_id:
            check_load_id(load_id)
            self._project_id, self._load_id = getattr(chunk, "project_id"), load_id  # noqa: B009
        elif load_id != self._load_id:
            violation = Violation(
                "load_id", f"changed from {self._load_id!r} mid-stream", "LOAD_ID_CHANGED"
            )
            raise InvalidArgument(
                f"every chunk of a stream must name load {self._load_id!r}", violations=[violation]
            )
        if self._final is not None:
            raise InvalidArgument(
                f"chunk {offset} of load {load_id!r} follows chunk {self._final}, marked final",
                violations=[
                    Violation("offset", f"chunk {self._final} was the final one", "AFTER_FINAL")
                ],
                metadata={"load_id": load_id, "offset": offset, "final_offset": self._final},
            )
        final: bool = getattr(chunk, "final")  # noqa: B009
        if final:
            self._final = offset
        self._writer.check(chunk)
        if self._progress is not None and offset < self._progress.next_offset:
            return _Prepared(chunk, None, final)
        return _Prepared(chunk, await self._parse(chunk), final)

    def _records(self, chunk: C) -> Sequence[Message]:
        records: Sequence[Message] = getattr(chunk, self._writer.records_field)
        return records

    async def _parse(self, chunk: C) -> ParsedBatch[Any]:
        """Every record checked; by default one invalid record refuses the whole chunk."""
        records = self._records(chunk)
        field_name = self._writer.records_field
        rows = self._writer.rows(chunk)
        parser = RecordParser(
            records,
            self._writer.rules,
            rows,
            field_name=field_name,
            partial=True,
            order=self._writer.order(chunk),
        )
        while parser.parsed < len(records):
            await self._may_parse.wait()
            parser.parse(min(parser.parsed + _SLICE, len(records)))
            await asyncio.sleep(0)  # let the writer's results in
        batch = parser.finish()  # its failures in request order
        offset = getattr(chunk, "offset")  # noqa: B009
        if batch.failures and not getattr(chunk, "partial_success"):  # noqa: B009
            raise InvalidArgument(
                f"chunk {offset} of load {self._load_id!r}: {len(batch.failures)} of "
                f"{len(records)} {field_name} are invalid; nothing of this chunk was written "
                "(earlier chunks are committed: see GetLoad)",
                violations=[v for vs in batch.failures.values() for v in vs],
                metadata={"load_id": self._load_id, "offset": offset},
            )
        return batch

    async def _commit(self, prepared: _Prepared[C]) -> None:
        if not self._opened:
            self._progress = await self._read()
            self._opened = True
        offset: int = getattr(prepared.chunk, "offset")  # noqa: B009
        self._through = max(self._through, offset)
        while not self._is_duplicate(offset):
            batch = prepared.batch
            if batch is None:
                batch = await self._parse(prepared.chunk)
            if await self._write(offset, batch, prepared.final):
                self._committed += 1
                self._report(offset, batch)
                self._count(batch)
                return
            self._progress = await self._read()
        self._skipped += 1
        self._unrecorded_skips += 1
        if self._metrics is not None:
            self._metrics.skipped.inc()
        if prepared.final:  # already in (sent before without `final`): done now, not at close
            await self._close_through(offset)

    def _count(self, batch: ParsedBatch[Any]) -> None:
        """A committed chunk in the metrics: its records, and those it refused."""
        if self._metrics is not None:
            self._metrics.chunks.inc()
            self._metrics.records.inc(len(batch.rows))
            if batch.failures:
                self._metrics.failed.inc(len(batch.failures))

    async def _read(self) -> loads.LoadProgress | None:
        async with self._db.connection() as conn:
            progress = await loads.get(conn, self._project_id, self._load_id)
        kind = self._writer.kind
        if progress is not None and progress.kind != kind:
            raise FailedPrecondition(
                f"load {self._load_id!r} loads {progress.kind}, not {kind}; use another load_id",
                reason="LOAD_KIND_MISMATCH",
                metadata={"load_id": self._load_id, "kind": progress.kind},
            )
        return progress

    def _is_duplicate(self, offset: int) -> bool:
        """True for an already committed chunk; refuses one that would leave a gap."""
        expected = self._progress.next_offset if self._progress else 0
        if offset > expected:
            raise FailedPrecondition(
                f"chunk offset {offset} of load {self._load_id!r} would leave a gap: the next "
                f"offset to send is {expected} (GetLoad tells it after a broken stream)",
                reason="OFFSET_GAP",
                metadata={"load_id": self._load_id, "offset": offset, "expected_offset": expected},
            )
        return offset < expected

    async def _write(self, offset: int, batch: ParsedBatch[Any], final: bool) -> bool:
        """Commit the chunk with the load's progress; False if the load moved on meanwhile.

        Validation of the next chunk steps aside for the round trips (BEGIN, the progress row,
        COMMIT) and runs while PostgreSQL takes the data. The kind's rows are locked before the
        load's progress row: two streams of one load must take their locks in the same order or
        they could deadlock.
        """
        while True:
            self._may_parse.clear()
            span = tracing.span(
                "load chunk",
                **{"zerodb.load.kind": self._writer.kind, "zerodb.load.offset": offset},
            )
            try:
                with span:
                    async with self._held.transaction() as conn:
                        inserted, updated = await self._writer.write(
                            conn, batch.rows, self._may_parse.set
                        )
                        self._may_parse.clear()
                        self._progress = await self._advance(
                            conn, offset, batch, inserted, updated, final
                        )
            except RetryChunk:
                continue
            except _Moved:
                return False
            finally:
                self._may_parse.set()
            self._unrecorded_skips = 0
            return True

    async def _advance(
        self,
        conn: Conn,
        offset: int,
        batch: ParsedBatch[Any],
        inserted: int,
        updated: int,
        final: bool,
    ) -> loads.LoadProgress:
        """Count the chunk in the load's progress row, in the chunk's transaction (which then
        marks the load done if the chunk is `final`)."""
        counts = loads.ChunkCounts(inserted, updated, len(batch.failures), self._unrecorded_skips)
        progress = await loads.advance(
            conn,
            self._project_id,
            self._load_id,
            self._writer.kind,
            offset,
            counts,
            final=final,
        )
        if progress is None:
            raise _Moved  # another stream of the load moved it on: roll the chunk back
        return progress

    async def _close_through(self, through: int) -> loads.LoadProgress:
        """The load done if `through` is its last chunk (load_finish), with the skips not yet
        counted; a synchronous commit, on the stream's connection."""
        async with self._held.transaction() as conn:
            progress = await loads.finish(
                conn, self._project_id, self._load_id, through, self._unrecorded_skips
            )
        if progress is None:
            raise NotFound(f"load {self._load_id!r} has no progress row", reason="LOAD_NOT_FOUND")
        self._progress, self._unrecorded_skips = progress, 0
        return progress

    def _report(self, offset: int, batch: ParsedBatch[Any]) -> None:
        room = limits.MAX_FAILURES_REPORTED - len(self._failures)
        for index, violations in list(batch.failures.items())[: max(room, 0)]:
            error = InvalidArgument(
                f"record {index} of chunk {offset} is invalid", violations=violations
            )
            self._failures.append(
                common_pb2.RecordFailure(offset=offset, index=index, error=error.to_status())
            )

    async def _finish(self) -> Any:
        """Mark the load done if this stream reached its last chunk (another stream of the load
        may be ahead). This commit is synchronous, so it also makes every earlier
        (asynchronously committed) chunk durable before the client hears the answer."""
        if not self._opened:
            raise InvalidArgument(
                "the stream carried no chunks; send at least one",
                violations=[
                    Violation(self._writer.records_field, "no chunk was sent", "EMPTY_STREAM")
                ],
            )
        try:
            progress = await self._close_through(self._through)
        finally:
            await self._held.release()
        return self._writer.response_type(
            load=to_message(progress),
            failures=self._failures,
            chunks_committed=self._committed,
            chunks_skipped=self._skipped,
        )
