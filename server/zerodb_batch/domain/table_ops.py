"""Table requests checked and turned into typed operations: table names, CreateTable, and each
operation of a BatchQuery (query, count, insert, update, delete)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from google.protobuf import struct_pb2

from zerodb.v1 import table_pb2
from zerodb_batch import limits
from zerodb_batch.domain import table_fields
from zerodb_batch.domain.rules import Document, Rules
from zerodb_batch.domain.struct_json import to_dict as struct_to_dict
from zerodb_batch.domain.table_fields import Path, read_paths
from zerodb_batch.domain.table_filter import MATCH_ALL, Filter, read_filter
from zerodb_batch.domain.table_update import Update, read_update
from zerodb_batch.domain.validate import Checker

TABLE_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
TABLE_NAME_RULE: Final = (
    f"1-{limits.MAX_TABLE_NAME_CHARS} characters of ASCII letters, digits, _ and -, "
    "starting with a letter"
)
KINDS: Final = ("query", "count", "insert", "update", "delete")
# The TableOperation fields each kind may set (besides `op` and `table`).
_FIELDS: Final = {
    "query": {"filters", "sort", "sort_by", "skip", "limit", "projection"},
    "count": {"filters"},
    "insert": {"rows"},
    "update": {"filters", "update", "all_rows"},
    "delete": {"filters", "all_rows"},
}


@dataclass(frozen=True)
class TableSpec:
    """A validated CreateTable request."""

    name: str
    description: str
    indexed_fields: tuple[Path, ...]


@dataclass(frozen=True)
class SortKey:
    path: Path
    descending: bool


@dataclass(frozen=True)
class RowQuery:
    """What a query reads: `limit` is already defaulted and capped."""

    filter: Filter = MATCH_ALL
    sort: tuple[SortKey, ...] = ()
    skip: int = 0
    limit: int = limits.DEFAULT_QUERY_LIMIT
    projection: tuple[Path, ...] = ()


@dataclass(frozen=True)
class QueryOp:
    table: str
    query: RowQuery


@dataclass(frozen=True)
class CountOp:
    table: str
    filter: Filter


@dataclass(frozen=True)
class InsertOp:
    table: str
    rows: tuple[str, ...]  # each row's row_data as JSON text


@dataclass(frozen=True)
class UpdateOp:
    table: str
    filter: Filter  # MATCH_ALL only with all_rows
    update: Update


@dataclass(frozen=True)
class DeleteOp:
    table: str
    filter: Filter  # MATCH_ALL only with all_rows


Operation: TypeAlias = QueryOp | CountOp | InsertOp | UpdateOp | DeleteOp

# A streamed row (StreamInsertRows): the record is the row's data itself.
ROW = Rules("Row", Document("row_data", limits.MAX_ROW_BYTES))


def check_table_name(c: Checker, at: str, name: str) -> None:
    if not name:
        c.add(at, f"is required: {TABLE_NAME_RULE}", "REQUIRED")
    elif len(name) > limits.MAX_TABLE_NAME_CHARS or not TABLE_NAME.fullmatch(name):
        c.add(at, f"is not a table name: use {TABLE_NAME_RULE}", "INVALID_TABLE_NAME")


def parse_create(request: table_pb2.CreateTableRequest) -> TableSpec:
    """The table to create; InvalidArgument listing every violation."""
    c = Checker("")
    check_table_name(c, "name", request.name)
    c.text("description", request.description, limits.MAX_TABLE_DESCRIPTION_CHARS)
    fields = read_paths(c, "indexed_fields", request.indexed_fields, limits.MAX_INDEXED_FIELDS)
    c.raise_if_any("the table is invalid")
    return TableSpec(request.name, request.description, fields)


def parse_operation(op: table_pb2.TableOperation, prefix: str) -> Operation:
    """One BatchQuery operation; InvalidArgument listing every violation under `prefix`
    (e.g. `operations[2]`)."""
    c = Checker("")
    parsed = read_operation(c, prefix, op)
    c.raise_if_any("the operation is invalid")
    assert parsed is not None  # no violation means every part was read
    return parsed


def read_operation(c: Checker, at: str, op: table_pb2.TableOperation) -> Operation | None:
    """Like parse_operation, adding the violations to `c` (None when there are some)."""
    kind = op.op or "query"
    before = len(c.violations)
    check_table_name(c, f"{at}.table", op.table)
    if kind not in KINDS:
        c.add(f"{at}.op", f"must be one of {', '.join(KINDS)}; got {op.op!r}", "INVALID_VALUE")
        return None
    _check_fields_belong(c, at, kind, op)
    parsed = _READERS[kind](c, at, op)
    return parsed if len(c.violations) == before else None


def _check_fields_belong(c: Checker, at: str, kind: str, op: table_pb2.TableOperation) -> None:
    for descriptor, _ in op.ListFields():
        if descriptor.name not in _FIELDS[kind] | {"op", "table"}:
            c.add(f"{at}.{descriptor.name}", f"does not belong to a {kind} operation",
                  "UNKNOWN_FIELD")  # fmt: skip


def _filter(c: Checker, at: str, op: table_pb2.TableOperation) -> Filter:
    return read_filter(c, f"{at}.filters", struct_to_dict(op.filters))


def _query(c: Checker, at: str, op: table_pb2.TableOperation) -> QueryOp:
    if op.skip < 0:
        c.add(f"{at}.skip", "must be 0 or more", "OUT_OF_RANGE")
    if op.limit < 0:
        c.add(f"{at}.limit", f"must be 0 (meaning {limits.DEFAULT_QUERY_LIMIT}) or more",
              "OUT_OF_RANGE")  # fmt: skip
    query = RowQuery(
        filter=_filter(c, at, op),
        sort=_sort(c, at, op),
        skip=max(op.skip, 0),
        limit=min(op.limit or limits.DEFAULT_QUERY_LIMIT, limits.MAX_QUERY_LIMIT),
        projection=read_paths(c, f"{at}.projection", op.projection, limits.MAX_PROJECTION_FIELDS),
    )
    return QueryOp(op.table, query)


def _sort(c: Checker, at: str, op: table_pb2.TableOperation) -> tuple[SortKey, ...]:
    if op.HasField("sort") and op.sort_by:
        c.add(f"{at}.sort", "set sort or sort_by, not both", "INVALID_SORT")
        return ()
    if op.HasField("sort"):
        return _sort_struct(c, f"{at}.sort", op.sort)
    if len(op.sort_by) > limits.MAX_SORT_KEYS:
        c.add(f"{at}.sort_by", f"at most {limits.MAX_SORT_KEYS} keys", "TOO_MANY")
        return ()
    keys = [_sort_key(c, f"{at}.sort_by[{i}]", k) for i, k in enumerate(op.sort_by)]
    return _distinct(c, f"{at}.sort_by", [k for k in keys if k is not None])


def _sort_struct(c: Checker, at: str, sort: struct_pb2.Struct) -> tuple[SortKey, ...]:
    spec = struct_to_dict(sort)
    if len(spec) != 1:
        c.add(at, "names exactly one field (a Struct keeps no order); use sort_by for several",
              "INVALID_SORT")  # fmt: skip
        return ()
    ((field, direction),) = spec.items()
    path = table_fields.read_path(c, f"{at}.{field}", field)
    if direction not in (1, -1) or isinstance(direction, bool):
        c.add(f"{at}.{field}", "must be 1 (ascending) or -1 (descending)", "INVALID_SORT")
        return ()
    return () if path is None else (SortKey(path, direction == -1),)


def _sort_key(c: Checker, at: str, key: table_pb2.SortKey) -> SortKey | None:
    path = table_fields.read_path(c, f"{at}.field", key.field)
    if key.direction not in (-1, 0, 1):
        c.add(f"{at}.direction", "must be 1 or 0 (ascending) or -1 (descending)", "INVALID_SORT")
        return None
    return None if path is None else SortKey(path, key.direction == -1)


def _distinct(c: Checker, at: str, keys: Sequence[SortKey]) -> tuple[SortKey, ...]:
    paths = [k.path for k in keys]
    if len(set(paths)) != len(paths):
        c.add(at, "names a field twice", "DUPLICATE_FIELD")
    return tuple(keys)


def _count(c: Checker, at: str, op: table_pb2.TableOperation) -> CountOp:
    return CountOp(op.table, _filter(c, at, op))


def _insert(c: Checker, at: str, op: table_pb2.TableOperation) -> InsertOp:
    if not op.rows or len(op.rows) > limits.MAX_INSERT_ROWS:
        c.add(f"{at}.rows", f"1 to {limits.MAX_INSERT_ROWS} rows, got {len(op.rows)}",
              "EMPTY_BATCH" if not op.rows else "BATCH_TOO_LARGE")  # fmt: skip
    rows = [
        c.json_object(f"{at}.rows[{i}]", row, limits.MAX_ROW_BYTES) for i, row in enumerate(op.rows)
    ]
    return InsertOp(op.table, tuple(rows))


def _targeted(c: Checker, at: str, op: table_pb2.TableOperation) -> Filter:
    """The filter of an update or delete: empty only with all_rows, and then only empty."""
    tree = _filter(c, at, op)
    empty = not op.filters.fields
    if empty and not op.all_rows:
        c.add(f"{at}.filters", "is empty: set all_rows to apply to every row of the table",
              "EMPTY_FILTER")  # fmt: skip
    elif op.all_rows and not empty:
        c.add(f"{at}.all_rows", "cannot be set together with a filter", "INVALID_VALUE")
    return tree


def _update(c: Checker, at: str, op: table_pb2.TableOperation) -> UpdateOp:
    tree = _targeted(c, at, op)
    return UpdateOp(op.table, tree, read_update(c, f"{at}.update", struct_to_dict(op.update)))


def _delete(c: Checker, at: str, op: table_pb2.TableOperation) -> DeleteOp:
    return DeleteOp(op.table, _targeted(c, at, op))


_Reader: TypeAlias = Callable[[Checker, str, table_pb2.TableOperation], Operation]
_READERS: Final[dict[str, _Reader]] = {
    "query": _query,
    "count": _count,
    "insert": _insert,
    "update": _update,
    "delete": _delete,
}
