"""A BatchQuery request checked: what fails the whole call, and each operation parsed on its own.

The call fails only for what belongs to the request as a whole (its size, request_id, atomic with
parallel). Anything wrong with one operation is that operation's failure, reported in its result
with every violation by path; the other operations still run (see TableService.BatchQuery).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from zerodb.v1 import table_pb2
from zerodb_batch import limits
from zerodb_batch.domain.table_ops import CountOp, Operation, QueryOp, read_operation
from zerodb_batch.domain.validate import Checker, check_batch_size, check_request_id
from zerodb_batch.errors import InvalidArgument, NotFound, Violation, ZeroDBError

_READS: Final = (QueryOp, CountOp)


@dataclass(frozen=True)
class Planned:
    """One operation of a batch: parsed, or the error it fails with when its turn comes."""

    index: int
    table: str
    kind: str  # the op as sent, `query` when empty: what its result echoes
    operation: Operation | None
    error: ZeroDBError | None = None


def plan(request: table_pb2.BatchQueryRequest) -> list[Planned]:
    """Every operation of the request, in order; InvalidArgument for a request that cannot run
    at all."""
    check_batch_size("operations", len(request.operations), limits.MAX_QUERY_OPERATIONS)
    check_request_id(request.request_id)
    if request.atomic and request.parallel:
        raise InvalidArgument(
            "atomic and parallel cannot be combined: an atomic batch runs in order",
            violations=[Violation("atomic", "cannot be set with parallel", "INVALID_VALUE")],
        )
    return [_planned(i, op) for i, op in enumerate(request.operations)]


def _planned(index: int, op: table_pb2.TableOperation) -> Planned:
    at = f"operations[{index}]"
    c = Checker("")
    parsed = read_operation(c, at, op)
    kind = op.op or "query"
    if parsed is None:
        error = InvalidArgument(
            f"{at} is invalid: {len(c.violations)} violation(s)", violations=c.violations
        )
        return Planned(index, op.table, kind, None, error)
    return Planned(index, op.table, kind, parsed)


def read_only(planned: Iterable[Planned]) -> bool:
    """True when no operation that will run writes (malformed ones never run)."""
    return all(p.operation is None or isinstance(p.operation, _READS) for p in planned)


def tables_named(planned: Iterable[Planned]) -> list[str]:
    """The distinct tables the runnable operations name."""
    return sorted({p.table for p in planned if p.operation is not None})


def missing_tables(planned: Sequence[Planned], found: Iterable[str]) -> list[Planned]:
    """The plan with NOT_FOUND for every runnable operation whose table does not exist."""
    known = set(found)
    return [
        p
        if p.operation is None or p.table in known
        else Planned(p.index, p.table, p.kind, None, table_not_found(p.index, p.table))
        for p in planned
    ]


def table_not_found(index: int, table: str) -> NotFound:
    return NotFound(
        f"operations[{index}].table: table {table!r} does not exist in this project",
        reason="TABLE_NOT_FOUND",
        metadata={"table": table, "field": f"operations[{index}].table"},
    )
