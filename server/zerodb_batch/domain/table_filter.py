"""The table filter language: a MongoDB-style JSON filter parsed into a small typed tree.

    {"status": "active", "age": {"$gte": 18, "$lt": 65},
     "$or": [{"vip": true}, {"tags": {"$contains": "beta"}}]}

The keys of a filter object are ANDed. A key is a field path (see table_fields) or one of
`$and` / `$or` (a non-empty array of filter objects) and `$not` (a filter object). A field's value
is either a JSON value (equality) or an object of operators, ANDed: `$eq $ne $gt $gte $lt $lte $in
$nin $contains $regex $exists $not`. An object mixing operators and plain keys is refused.

Comparison semantics (the same whatever the index): values compare only within their JSON type.
`$eq` matches a field of the same type and equal value: numbers numerically (1 equals 1.0),
strings exactly, arrays element by element in order, objects by the same keys with equal values;
a field equal to an array does not match one of its elements (use `$contains`). `null` matches
an explicit JSON null only; a missing field equals nothing. `$gt $gte $lt $lte` take a number or a
string and match fields of that type only (numbers numerically, strings by Unicode code point).
`$in` is `$eq` against any of a list. `$ne`, `$nin` and `$not` match exactly the rows that the
condition they negate does not match, rows missing the field included. `$contains` matches a
string field holding a string operand as a substring, or an array field with an element equal to
the operand. `$regex` matches string fields (see table_regex). `$exists` tests presence (a JSON null
is present). A path part of digits also picks an element of an array by position (`tags.0`).

Every problem becomes a Violation whose field is the exact path: `operations[2].filters.age.$gt`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from zerodb_batch import limits
from zerodb_batch.domain.table_fields import Json, Path, check_json, is_number, join, read_path
from zerodb_batch.domain.table_regex import RegexError, check_regex
from zerodb_batch.domain.validate import Checker


@dataclass(frozen=True)
class Compare:
    """`path` `op` `value`; op is "eq" (any JSON value) or "gt" "gte" "lt" "lte" (number or
    string)."""

    path: Path
    op: str
    value: Json


@dataclass(frozen=True)
class In:
    """The field equals one of `values` (`$in`)."""

    path: Path
    values: tuple[Json, ...]


@dataclass(frozen=True)
class Contains:
    """A substring of a string field, or an element of an array field (`value` is a scalar)."""

    path: Path
    value: Json


@dataclass(frozen=True)
class Regex:
    """A string field matches `pattern` (checked by table_regex)."""

    path: Path
    pattern: str


@dataclass(frozen=True)
class Exists:
    path: Path
    exists: bool


@dataclass(frozen=True)
class And:
    """Every part matches; no parts matches every row."""

    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    """The rows that `part` does not match (`$ne`, `$nin` and `$not` all become this)."""

    part: Filter


Filter: TypeAlias = Compare | In | Contains | Regex | Exists | And | Or | Not
MATCH_ALL: Final = And(())

RANGE_OPS: Final = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}
FIELD_OPERATORS: Final = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$contains",
                          "$regex", "$exists", "$not")  # fmt: skip
LOGICAL_OPERATORS: Final = ("$and", "$or", "$not")


def parse_filter(filters: Mapping[str, Json], prefix: str) -> Filter:
    """The filter object `filters` as a tree; InvalidArgument listing every violation, each
    under `prefix` (e.g. `operations[2].filters`)."""
    c = Checker("")
    tree = read_filter(c, prefix, filters)
    c.raise_if_any("the filter is invalid")
    return tree


def read_filter(c: Checker, at: str, filters: Json) -> Filter:
    """Parse the filter object found at `at`, adding its violations to `c` (a Checker without
    prefix: `at` is the whole path, such as `operations[2].filters`)."""
    reader = _Reader(c)
    tree = reader.document(at, filters, 0)
    if reader.conditions > limits.MAX_FILTER_CONDITIONS:
        c.add(
            at,
            f"at most {limits.MAX_FILTER_CONDITIONS} conditions, got {reader.conditions}",
            "TOO_MANY",
        )
    return tree


def is_empty(tree: Filter) -> bool:
    """Whether the filter matches every row because it has no condition at all."""
    return tree == MATCH_ALL


class _Reader:
    """One filter's parse: the violations go to the checker, the conditions are counted."""

    def __init__(self, c: Checker) -> None:
        self.c = c
        self.conditions = 0

    def document(self, at: str, value: Json, depth: int) -> Filter:
        if not isinstance(value, dict):
            self.c.add(at, "must be an object of conditions", "INVALID_FILTER")
            return MATCH_ALL
        if depth > limits.MAX_FILTER_DEPTH:
            self.c.add(at, f"nested deeper than {limits.MAX_FILTER_DEPTH} levels", "TOO_DEEP")
            return MATCH_ALL
        return _all([self.entry(join(at, key), key, v, depth) for key, v in value.items()])

    def entry(self, at: str, key: str, value: Json, depth: int) -> Filter:
        if key in ("$and", "$or"):
            parts = self.logical(at, value, depth)
            return And(parts) if key == "$and" else Or(parts)
        if key == "$not":
            return Not(self.document(at, value, depth + 1))
        if key.startswith("$"):
            return self.unknown(at, key, (*LOGICAL_OPERATORS, "or a field path"))
        path = read_path(self.c, at, key)
        if path is None:
            return MATCH_ALL
        if isinstance(value, dict) and any(k.startswith("$") for k in value):
            return self.operators(at, path, value, depth)
        return self.leaf(at, value, lambda: Compare(path, "eq", value))

    def logical(self, at: str, value: Json, depth: int) -> tuple[Filter, ...]:
        if not isinstance(value, list) or not value:
            self.c.add(at, "must be a non-empty array of filter objects", "INVALID_FILTER")
            return ()
        return tuple(self.document(f"{at}[{i}]", v, depth + 1) for i, v in enumerate(value))

    def operators(self, at: str, path: Path, ops: dict[str, Json], depth: int) -> Filter:
        if not all(k.startswith("$") for k in ops):
            self.c.add(at, "mixes operators ($...) and field names", "INVALID_FILTER")
            return MATCH_ALL
        if depth > limits.MAX_FILTER_DEPTH:
            self.c.add(at, f"nested deeper than {limits.MAX_FILTER_DEPTH} levels", "TOO_DEEP")
            return MATCH_ALL
        return _all([self.operator(join(at, op), path, op, v, depth) for op, v in ops.items()])

    def operator(self, at: str, path: Path, op: str, value: Json, depth: int) -> Filter:
        if op in ("$eq", "$ne"):
            tree = self.leaf(at, value, lambda: Compare(path, "eq", value))
            return Not(tree) if op == "$ne" else tree
        if op in RANGE_OPS:
            return self.range(at, path, RANGE_OPS[op], value)
        if op in ("$in", "$nin"):
            tree = self.one_of(at, path, value)
            return Not(tree) if op == "$nin" else tree
        if op == "$contains":
            return self.contains(at, path, value)
        if op == "$regex":
            return self.regex(at, path, value)
        if op == "$exists":
            return self.exists(at, path, value)
        if op == "$not":
            if not isinstance(value, dict) or not value:
                self.c.add(at, "must be an object of operators", "INVALID_FILTER")
                return MATCH_ALL
            return Not(self.operators(at, path, value, depth + 1))
        return self.unknown(at, op, FIELD_OPERATORS)

    def leaf(self, at: str, value: Json, make: Callable[[], Filter]) -> Filter:
        self.conditions += 1
        return make() if check_json(self.c, at, value) else MATCH_ALL

    def range(self, at: str, path: Path, op: str, value: Json) -> Filter:
        if not (is_number(value) or isinstance(value, str)):
            return self.mismatch(at, "takes a number or a string", value)
        return self.leaf(at, value, lambda: Compare(path, op, value))

    def one_of(self, at: str, path: Path, value: Json) -> Filter:
        if not isinstance(value, list):
            return self.mismatch(at, "takes an array of values", value)
        if len(value) > limits.MAX_IN_VALUES:
            self.c.add(at, f"at most {limits.MAX_IN_VALUES} values, got {len(value)}", "TOO_MANY")
            return MATCH_ALL
        return self.leaf(at, value, lambda: In(path, tuple(value)))

    def contains(self, at: str, path: Path, value: Json) -> Filter:
        if isinstance(value, list | dict):
            return self.mismatch(at, "takes a string, number, boolean or null", value)
        return self.leaf(at, value, lambda: Contains(path, value))

    def regex(self, at: str, path: Path, value: Json) -> Filter:
        if not isinstance(value, str):
            return self.mismatch(at, "takes a string (a regular expression)", value)
        try:
            check_regex(value)
        except RegexError as e:
            self.c.add(at, f"not an accepted regular expression: {e}", "INVALID_REGEX")
            return MATCH_ALL
        return self.leaf(at, value, lambda: Regex(path, value))

    def exists(self, at: str, path: Path, value: Json) -> Filter:
        if not isinstance(value, bool):
            return self.mismatch(at, "takes true or false", value)
        return self.leaf(at, value, lambda: Exists(path, value))

    def mismatch(self, at: str, expected: str, value: Json) -> Filter:
        self.c.add(at, f"{expected}, got {json_type(value)}", "TYPE_MISMATCH")
        return MATCH_ALL

    def unknown(self, at: str, key: str, known: tuple[str, ...]) -> Filter:
        self.c.add(at, f"unknown operator {key}; use one of {', '.join(known)}", "UNKNOWN_OPERATOR")
        return MATCH_ALL


def _all(parts: list[Filter]) -> Filter:
    parts = [p for p in parts if p != MATCH_ALL]
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def json_type(value: Json) -> str:
    """The JSON type name of a value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if is_number(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"
