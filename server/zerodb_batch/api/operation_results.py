"""The answer of a BatchQuery: one `OperationResult` per operation, in input order; the counters.

Where `api/results.py` answers a write batch item by item, a BatchQuery answers operation by
operation; every way an operation can end is set here: it ran (rows or counts, filled by the
runner into `result(index)`), it failed with its own `google.rpc.Status`, it was skipped, or it
ran and was rolled back with its atomic batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final

from zerodb.v1 import table_pb2
from zerodb_batch.domain.table_batch import Planned
from zerodb_batch.domain.timestamps import set_timestamp
from zerodb_batch.errors import ZeroDBError
from zerodb_batch.storage.table_rows import StoredRow

SUCCEEDED: Final = table_pb2.OPERATION_OUTCOME_SUCCEEDED
FAILED: Final = table_pb2.OPERATION_OUTCOME_FAILED
SKIPPED: Final = table_pb2.OPERATION_OUTCOME_SKIPPED
ROLLED_BACK: Final = table_pb2.OPERATION_OUTCOME_ROLLED_BACK
# What an operation that ran reports; a rolled back one reports none of it.
_PAYLOAD: Final = ("rows", "has_more", "inserted", "matched", "modified", "deleted", "row_ids",
                   "count")  # fmt: skip


class BatchResults:
    """The results of one batch, each UNSPECIFIED until its operation ends. They are built in
    place in the response: a 50-operation batch of 1000 rows each is never copied."""

    def __init__(self, planned: Sequence[Planned]) -> None:
        self._response = table_pb2.BatchQueryResponse()
        add = self._response.results.add
        self._results = [add(index=p.index, table=p.table, op=p.kind) for p in planned]

    def result(self, index: int) -> table_pb2.OperationResult:
        """The result of operation `index`, for its rows and counts."""
        return self._results[index]

    def succeeded(self, index: int, elapsed_ms: float) -> None:
        result = self._results[index]
        result.outcome, result.execution_time_ms = SUCCEEDED, elapsed_ms

    def failed(self, index: int, error: ZeroDBError, elapsed_ms: float = 0.0) -> None:
        result = self._results[index]
        for name in _PAYLOAD:
            result.ClearField(name)
        result.outcome, result.execution_time_ms = FAILED, elapsed_ms
        result.error.CopyFrom(error.to_status())

    def skip_unfinished(self) -> None:
        """Every operation that has not ended is SKIPPED."""
        for result in self._results:
            if result.outcome == table_pb2.OPERATION_OUTCOME_UNSPECIFIED:
                result.outcome = SKIPPED

    def roll_back(self) -> None:
        """An atomic batch failed: what had succeeded is undone, and reports nothing."""
        for result in self._results:
            if result.outcome == SUCCEEDED:
                for name in _PAYLOAD:
                    result.ClearField(name)
                result.outcome = ROLLED_BACK

    def response(self) -> table_pb2.BatchQueryResponse:
        self.skip_unfinished()
        counted = Counter(result.outcome for result in self._results)
        response = self._response
        response.succeeded, response.failed = counted[SUCCEEDED], counted[FAILED]
        response.skipped, response.rolled_back = counted[SKIPPED], counted[ROLLED_BACK]
        return response


def add_rows(result: table_pb2.OperationResult, rows: Iterable[StoredRow]) -> None:
    """The rows of a query into its result, each built in place."""
    add = result.rows.add
    for row in rows:
        message = add(row_id=row.row_id)
        message.row_data.update(row.row_data)
        set_timestamp(message.create_time, row.create_time)
        set_timestamp(message.update_time, row.update_time)
