"""StreamInsertRows' writer for the load engine: each chunk's rows by COPY into one existing table.

Rows are formatted into COPY text lines as they are validated, each under a new time-ordered
row id. The table is looked up (and locked against a concurrent DeleteTable) in every chunk's
transaction; its project and table id start every line as the chunk is sent.

A stream that wrote many rows refreshes the statistics of `table_rows` before it answers: until
then the planner knows nothing of the new rows, and walks the primary key instead of the table's
field index (measured: an indexed equality query on a freshly loaded 100,000-row table took
180-490 ms instead of 0.1 ms, while ANALYZE took 0.5-1 s).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from zerodb.v1 import table_pb2
from zerodb_batch.domain.table_ops import ROW, check_table_name
from zerodb_batch.domain.validate import Checker
from zerodb_batch.errors import InvalidArgument, NotFound, Violation
from zerodb_batch.storage.copy_text import CopyLines, field
from zerodb_batch.storage.pool import Conn, Database
from zerodb_batch.storage.queries import Q
from zerodb_batch.storage.table_rows import new_row_id

log = logging.getLogger(__name__)

# The changed rows after which autovacuum analyzes table_rows (migration 0005): a stream that
# wrote as many does it at once, rather than leaving its table planned blind for up to a minute.
ANALYZE_AFTER_ROWS: Final = 20_000


class RowCopyLines(CopyLines):
    """Valid rows as `row_id<TAB>row_data` lines; the writer sets the prefix of the other two
    columns once it knows the table's id."""

    __slots__ = ()

    def add(self, index: int, row_data: str) -> None:
        # JSON text escapes its tabs and newlines: only a backslash can need escaping here.
        if "\\" in row_data:
            row_data = field(row_data)
        self.lines.append(f"{new_row_id()}\t{row_data}\n")


class RowLoadWriter:
    """StreamInsertRows' writer: every chunk of the stream names the same existing table."""

    kind = "rows"
    rules = ROW
    records_field = "rows"
    response_type = table_pb2.StreamInsertRowsResponse

    def __init__(self) -> None:
        self._project_id = ""
        self._table = ""
        self._table_id: int | None = None
        self.inserted = 0  # rows this stream wrote

    def check(self, chunk: table_pb2.StreamInsertRowsRequest) -> None:
        if not self._table:
            c = Checker("")
            check_table_name(c, "table", chunk.table)
            c.raise_if_any("the chunk names no valid table")
            self._project_id, self._table = chunk.project_id, chunk.table
        elif chunk.table != self._table:
            raise InvalidArgument(
                f"every chunk of a stream must name table {self._table!r}",
                violations=[
                    Violation("table", f"changed from {self._table!r} mid-stream", "TABLE_CHANGED")
                ],
            )

    def rows(self, chunk: table_pb2.StreamInsertRowsRequest) -> RowCopyLines:
        return RowCopyLines()

    def order(self, chunk: table_pb2.StreamInsertRowsRequest) -> None:
        return None  # every row gets a new id: no two writers share one

    async def write(
        self, conn: Conn, rows: RowCopyLines, started: Callable[[], object]
    ) -> tuple[int, int]:
        rows.prefix = f"{field(self._project_id)}\t{await self._lock(conn)}\t"
        await rows.copy(conn, Q["table_rows_copy"], started)
        self.inserted += len(rows)
        return len(rows), 0

    async def _lock(self, conn: Conn) -> int:
        """The table's id, locked for this chunk; NotFound if it was deleted (or deleted and
        made again: a load goes into the table it started with)."""
        params = {"project_id": self._project_id, "name": self._table}
        found = await (await conn.execute(Q["table_lock"], params)).fetchone()
        table_id: int | None = int(found[0]) if found else None  # type: ignore[call-overload]
        if table_id is None or self._table_id not in (None, table_id):
            raise NotFound(
                f"table {self._table!r} does not exist in this project"
                + (" any more: it was deleted during the load" if self._table_id else ""),
                reason="TABLE_NOT_FOUND",
                metadata={"table": self._table},
            )
        self._table_id = table_id
        return table_id


async def analyze_after(db: Database, writer: RowLoadWriter) -> None:
    """Fresh statistics after a stream that wrote ANALYZE_AFTER_ROWS rows or more. Best effort:
    the rows are committed whatever happens here, and autovacuum analyzes later anyway."""
    if writer.inserted < ANALYZE_AFTER_ROWS:
        return
    try:
        async with db.connection() as conn:
            await conn.execute(Q["table_rows_analyze"])
    except Exception as e:
        log.warning("ANALYZE after a load of %d rows failed: %s", writer.inserted, e)
