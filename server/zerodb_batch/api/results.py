"""Per-item results shared by every batch: one `ItemResult` per input item, in input order."""

from __future__ import annotations

from collections.abc import Sequence

from zerodb.v1 import common_pb2
from zerodb_batch.errors import InvalidArgument, Violation


def ok(index: int, item_id: str, outcome: common_pb2.Outcome.ValueType) -> common_pb2.ItemResult:
    return common_pb2.ItemResult(index=index, id=item_id, outcome=outcome)


def failed(index: int, item_id: str, violations: Sequence[Violation]) -> common_pb2.ItemResult:
    """A refused item, its `error` an INVALID_ARGUMENT status naming every bad field."""
    error = InvalidArgument(f"item {index} is invalid", violations=violations).to_status()
    return common_pb2.ItemResult(
        index=index, id=item_id, outcome=common_pb2.OUTCOME_FAILED, error=error
    )
