"""StreamUpsertMemories: a client stream of chunks, each committed with its load's progress.

Each chunk is one transaction: its records and the load's progress row advanced to the chunk's
offset. So after a broken stream `GetLoad` says exactly which chunks are in; a chunk at or below
that offset is a duplicate from a resumed stream and is skipped, and a chunk past the next offset
is refused, as it would leave a gap. A cancelled stream rolls back the chunk in flight: no chunk
is ever half written.

Memory stays flat however long the stream: the next chunk is decoded, validated and formatted
for COPY while the one before it is being written (that overlap keeps PostgreSQL and Python busy
at once), and at most one more waits between the two. Validation works in slices and holds
back while the writer waits on a round trip (BEGIN, progress, COMMIT): those then take a turn of
the event loop, not several slices, and validation fills the time PostgreSQL spends on the COPY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from zerodb.v1 import common_pb2, memory_pb2
from zerodb_batch import limits
from zerodb_batch.api.loads import check_load_id, to_message
from zerodb_batch.domain.memory import ParsedBatch, RecordParser
from zerodb_batch.domain.validate import check_batch_size
from zerodb_batch.errors import FailedPrecondition, InvalidArgument, NotFound, Violation
from zerodb_batch.storage import loads, memories
from zerodb_batch.storage.copy_text import MemoryCopyRows
from zerodb_batch.storage.pool import Conn, HeldConnection, connection

log = logging.getLogger(__name__)

KIND = "memories"
_SLICE = 200  # records validated between two turns of the event loop

Chunk = memory_pb2.StreamUpsertMemoriesRequest


@dataclass(frozen=True)
class _Prepared:
    chunk: Chunk
    # None: known to be a duplicate when it arrived, so not parsed.
    batch: ParsedBatch[MemoryCopyRows] | None


class _Moved(Exception):
    """Another stream of the same load advanced its progress under this chunk."""


class MemoryLoad:
    """One StreamUpsertMemories call."""

    def __init__(self, pool: AsyncConnectionPool[Conn]) -> None:
        self._pool = pool
        self._db = HeldConnection(pool)  # for chunk transactions; given back when idle
        self._project_id = ""
        self._load_id = ""
        self._progress: loads.LoadProgress | None = None  # as last read or written
        self._opened = False
        self._through = -1  # the highest offset this stream sent (committed or skipped)
        self._all_new = True  # no chunk of this stream has met an existing id yet
        self._committed = 0
        self._skipped = 0
        self._unrecorded_skips = 0  # duplicates not yet added to the progress row
        self._failures: list[common_pb2.RecordFailure] = []
        self._may_parse = asyncio.Event()  # cleared while the writer waits on a round trip
        self._may_parse.set()

    async def run(self, chunks: AsyncIterator[Chunk]) -> memory_pb2.StreamUpsertMemoriesResponse:
        try:
            await self._consume(chunks)
        except BaseException:
            await self._record_skips()
            raise
        return await self._finish()

    async def _consume(self, chunks: AsyncIterator[Chunk]) -> None:
        """Every chunk of the stream, committed or skipped in order."""
        ready: asyncio.Queue[_Prepared | Exception | None] = asyncio.Queue(maxsize=1)
        reader = asyncio.create_task(self._read_ahead(chunks, ready))
        try:
            while (item := await ready.get()) is not None:
                if isinstance(item, Exception):
                    raise item  # in stream order: every chunk before it is committed
                await self._commit(item)
                if ready.empty():  # waiting on the client: no connection held meanwhile
                    await self._db.release()
        finally:
            try:
                await self._db.release()  # first: a second cancellation must not skip it
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
            async with connection(self._pool) as conn:
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
        self, chunks: AsyncIterator[Chunk], ready: asyncio.Queue[_Prepared | Exception | None]
    ) -> None:
        """Check and parse each chunk as it arrives; a refusal goes down the queue in order."""
        try:
            async for chunk in chunks:
                await ready.put(await self._prepare(chunk))
        except Exception as e:  # our refusals, and the interceptor's (a foreign project_id)
            await ready.put(e)
            return
        await ready.put(None)

    async def _prepare(self, chunk: Chunk) -> _Prepared:
        """Message-level checks, then the records (skipped for a chunk known to be in)."""
        check_batch_size("records", len(chunk.records), limits.MAX_STREAM_CHUNK_RECORDS)
        if chunk.offset < 0:
            raise InvalidArgument(
                f"offset must be 0 or more, got {chunk.offset}",
                violations=[Violation("offset", "must be 0 or more", "OUT_OF_RANGE")],
            )
        if not self._load_id:
            check_load_id(chunk.load_id)
            self._project_id, self._load_id = chunk.project_id, chunk.load_id
        elif chunk.load_id != self._load_id:
            violation = Violation(
                "load_id", f"changed from {self._load_id!r} mid-stream", "LOAD_ID_CHANGED"
            )
            raise InvalidArgument(
                f"every chunk of a stream must name load {self._load_id!r}", violations=[violation]
            )
        if self._progress is not None and chunk.offset < self._progress.next_offset:
            return _Prepared(chunk, None)
        return _Prepared(chunk, await self._parse(chunk))

    async def _parse(self, chunk: Chunk) -> ParsedBatch[MemoryCopyRows]:
        """Every record checked; by default one invalid record refuses the whole chunk."""
        rows = MemoryCopyRows(self._project_id)
        parser = RecordParser(chunk.records, rows, field_name="records", partial=True)
        while parser.parsed < len(chunk.records):
            await self._may_parse.wait()
            parser.parse(min(parser.parsed + _SLICE, len(chunk.records)))
            await asyncio.sleep(0)  # let the writer's results in
        batch = parser.finish()
        if batch.failures and not chunk.partial_success:
            raise InvalidArgument(
                f"chunk {chunk.offset} of load {self._load_id!r}: {len(batch.failures)} of "
                f"{len(chunk.records)} records are invalid; nothing of this chunk was written "
                "(earlier chunks are committed: see GetLoad)",
                violations=[v for vs in batch.failures.values() for v in vs],
                metadata={"load_id": self._load_id, "offset": chunk.offset},
            )
        return batch

    async def _commit(self, prepared: _Prepared) -> None:
        if not self._opened:
            self._progress = await self._read()
            self._opened = True
        offset = prepared.chunk.offset
        self._through = max(self._through, offset)
        while not self._is_duplicate(offset):
            batch = prepared.batch
            if batch is None:
                batch = await self._parse(prepared.chunk)
            if await self._write(offset, batch):
                self._committed += 1
                self._report(offset, batch)
                return
            self._progress = await self._read()
        self._skipped += 1
        self._unrecorded_skips += 1

    async def _read(self) -> loads.LoadProgress | None:
        async with connection(self._pool) as conn:
            progress = await loads.get(conn, self._project_id, self._load_id)
        if progress is not None and progress.kind != KIND:
            raise FailedPrecondition(
                f"load {self._load_id!r} loads {progress.kind}, not {KIND}; use another load_id",
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

    async def _write(self, offset: int, batch: ParsedBatch[MemoryCopyRows]) -> bool:
        """Commit the chunk with the load's progress; False if the load moved on meanwhile."""
        try:
            progress = await self._insert(offset, batch) if self._all_new else None
            if progress is None:
                progress = await self._upsert(offset, batch)
        except _Moved:
            return False
        self._progress = progress
        self._unrecorded_skips = 0
        return True

    async def _insert(
        self, offset: int, batch: ParsedBatch[MemoryCopyRows]
    ) -> loads.LoadProgress | None:
        """The chunk as new records, by COPY straight into the table; None if one of its ids
        exists: that attempt rolls back, and this and every later chunk take the upsert.

        Validation of the next chunk steps aside for the round trips (BEGIN, the progress row,
        COMMIT) and runs while PostgreSQL takes the COPY. Like the upsert, it locks the memory
        rows before the load's progress row: two streams of one load, one inserting and one
        upserting, must take their locks in the same order or they could deadlock.
        """
        self._may_parse.clear()
        try:
            async with self._db.transaction() as conn:
                await memories.copy_insert(conn, batch.rows, copying=self._may_parse.set)
                self._may_parse.clear()
                progress = await self._advance(conn, offset, batch, len(batch.rows), 0)
        except memories.IdExists:
            self._all_new = False
            return None
        finally:
            self._may_parse.set()
        return progress

    async def _upsert(self, offset: int, batch: ParsedBatch[MemoryCopyRows]) -> loads.LoadProgress:
        """The chunk through the staging table and one upsert."""
        async with self._db.transaction() as conn:
            inserted, updated = await memories.copy_upsert(conn, batch.rows)
            return await self._advance(conn, offset, batch, inserted, updated)

    async def _advance(
        self,
        conn: Conn,
        offset: int,
        batch: ParsedBatch[MemoryCopyRows],
        inserted: int,
        updated: int,
    ) -> loads.LoadProgress:
        """Count the chunk in the load's progress row, in the chunk's transaction."""
        counts = loads.ChunkCounts(inserted, updated, len(batch.failures), self._unrecorded_skips)
        progress = await loads.advance(conn, self._project_id, self._load_id, KIND, offset, counts)
        if progress is None:
            raise _Moved  # another stream of the load moved it on: roll the chunk back
        return progress

    def _report(self, offset: int, batch: ParsedBatch[MemoryCopyRows]) -> None:
        room = limits.MAX_FAILURES_REPORTED - len(self._failures)
        for index, violations in list(batch.failures.items())[: max(room, 0)]:
            error = InvalidArgument(
                f"record {index} of chunk {offset} is invalid", violations=violations
            )
            self._failures.append(
                common_pb2.RecordFailure(offset=offset, index=index, error=error.to_status())
            )

    async def _finish(self) -> memory_pb2.StreamUpsertMemoriesResponse:
        """Mark the load done if this stream reached its last chunk (another stream of the load
        may be ahead). This commit is synchronous, so it also makes every earlier
        (asynchronously committed) chunk durable before the client hears the answer."""
        if not self._opened:
            raise InvalidArgument(
                "the stream carried no chunks; send at least one",
                violations=[Violation("records", "no chunk was sent", "EMPTY_STREAM")],
            )
        async with connection(self._pool) as conn:
            progress = await loads.finish(
                conn, self._project_id, self._load_id, self._through, self._unrecorded_skips
            )
        if progress is None:
            raise NotFound(f"load {self._load_id!r} has no progress row", reason="LOAD_NOT_FOUND")
        return memory_pb2.StreamUpsertMemoriesResponse(
            load=to_message(progress),
            failures=self._failures,
            chunks_committed=self._committed,
            chunks_skipped=self._skipped,
        )
