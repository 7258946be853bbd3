"""Filters, sorts and updates of table rows compiled to SQL, and the index expressions they use.

Nothing a caller sends becomes SQL text: values and field paths are parameters (`row_data #>
%(p0)s`), and the text comes from this module. Statements run unprepared: PostgreSQL then plans
each one with its parameter values (a custom plan), so `table_id = 42` proves an index's partial
predicate and the path parameter equals the path in an index expression.

A field is seen three ways, and the comparison rule of domain/table_filter.py follows from them:
- its JSON value, `row_data #> path` (SQL NULL when missing);
- as a number: `CASE WHEN jsonb_typeof(...) = 'number' THEN (...)::numeric END`, NULL otherwise;
- as a string: the same for strings, `COLLATE "C"`, so text compares by code point.
Number and string comparisons use the typed views, so a value of another type never matches
(NULL), and an index on (number view, string view) serves them. Other equalities compare jsonb.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final, LiteralString

from psycopg import sql
from psycopg.types.json import Jsonb

from zerodb_batch.domain.table_fields import Json, Path, is_number
from zerodb_batch.domain.table_filter import (
    And,
    Compare,
    Contains,
    Filter,
    In,
    Not,
    Or,
    Regex,
)
from zerodb_batch.domain.table_ops import SortKey
from zerodb_batch.domain.table_update import Update

_OPERATOR: Final[dict[str, LiteralString]] = {
    "eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="
}  # fmt: skip
# Sort order of JSON types; missing fields and JSON null come first (rank 0).
_TYPE_RANK: Final = sql.SQL(
    "CASE jsonb_typeof({value}) WHEN 'number' THEN 1 WHEN 'string' THEN 2 WHEN 'object' THEN 3 "
    "WHEN 'array' THEN 4 WHEN 'boolean' THEN 5 ELSE 0 END"
)
# Booleans, objects and arrays order by their jsonb value; null and missing stay equal (NULL).
_OTHER: Final = sql.SQL(
    "CASE WHEN jsonb_typeof({value}) IN ('boolean', 'object', 'array') THEN {value} END"
)
INDEX_NAME: Final = "table_rows_t{table_id}_f{n}"


class Params:
    """The named parameters of one statement."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self._paths: dict[Path, sql.Composable] = {}

    def add(self, value: object, cast: LiteralString) -> sql.Composable:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return sql.SQL("{}::" + cast).format(sql.Placeholder(name))

    def path(self, path: Path) -> sql.Composable:
        """A field path as a text[] parameter, one per distinct path."""
        if path not in self._paths:
            self._paths[path] = self.add(list(path), "text[]")
        return self._paths[path]


ROW_DATA: Final = sql.Identifier("row_data")


class Field:
    """The SQL views of one field of a jsonb column (a table row's `row_data`, a vector's
    `metadata`), given its path as a parameter or a literal."""

    def __init__(self, path: sql.Composable, column: sql.Identifier = ROW_DATA) -> None:
        self.value = sql.SQL("({} #> {})").format(column, path)
        self.number = sql.SQL(
            "CASE WHEN jsonb_typeof({v}) = 'number' THEN ({v})::numeric END"
        ).format(v=self.value)
        self.string = sql.SQL(
            "(CASE WHEN jsonb_typeof({v}) = 'string' THEN {c} #>> {p} END) COLLATE \"C\""
        ).format(v=self.value, c=column, p=path)

    def typed(self, json_type: LiteralString) -> sql.Composable:
        return sql.SQL("jsonb_typeof({}) = {}").format(self.value, sql.Literal(json_type))

    def is_number(self) -> sql.Composable:
        return self.typed("number")

    def is_string(self) -> sql.Composable:
        # "number view IS NULL" lets an index on (number view, string view) range-scan strings.
        return sql.SQL("{} AND {} IS NULL").format(self.typed("string"), self.number)


def where(tree: Filter, params: Params, column: sql.Identifier = ROW_DATA) -> sql.Composable:
    """A boolean SQL expression true exactly for the rows whose `column` `tree` matches (NULL
    counts as false: Not() turns it into true, and AND/OR keep it false)."""
    if isinstance(tree, And | Or):
        if not tree.parts:
            return sql.SQL("true")
        joiner = sql.SQL(" AND " if isinstance(tree, And) else " OR ")
        return sql.SQL("({})").format(
            joiner.join(where(part, params, column) for part in tree.parts)
        )
    if isinstance(tree, Not):
        return sql.SQL("(({}) IS NOT TRUE)").format(where(tree.part, params, column))
    field = Field(params.path(tree.path), column)
    if isinstance(tree, Compare):
        return _compare(field, tree.op, tree.value, params)
    if isinstance(tree, In):
        return _one_of(field, tree.values, params)
    if isinstance(tree, Contains):
        return _contains(field, tree.value, params)
    if isinstance(tree, Regex):
        return sql.SQL("({} ~ {})").format(field.string, params.add(tree.pattern, "text"))
    return sql.SQL("({} IS NOT NULL)" if tree.exists else "({} IS NULL)").format(field.value)


def _compare(field: Field, op: str, value: Json, params: Params) -> sql.Composable:
    operator = sql.SQL(_OPERATOR[op])
    if is_number(value):
        return sql.SQL("({} AND {} {} {})").format(
            field.is_number(), field.number, operator, params.add(decimal(value), "numeric")
        )
    if isinstance(value, str):
        return sql.SQL("({} AND {} {} {})").format(
            field.is_string(), field.string, operator, params.add(value, "text")
        )
    return sql.SQL("({} = {})").format(field.value, params.add(Jsonb(value), "jsonb"))


def _one_of(field: Field, values: tuple[Json, ...], params: Params) -> sql.Composable:
    numbers = [decimal(v) for v in values if is_number(v)]
    strings = [v for v in values if isinstance(v, str)]
    others = [Jsonb(v) for v in values if not (is_number(v) or isinstance(v, str))]
    parts = []
    if numbers:
        parts.append(sql.SQL("({} AND {} = ANY({}))").format(
            field.is_number(), field.number, params.add(numbers, "numeric[]")))  # fmt: skip
    if strings:
        parts.append(sql.SQL("({} AND {} = ANY({}))").format(
            field.is_string(), field.string, params.add(strings, "text[]")))  # fmt: skip
    if others:
        parts.append(sql.SQL("({} = ANY({}))").format(field.value, params.add(others, "jsonb[]")))
    return sql.SQL("({})").format(sql.SQL(" OR ").join(parts)) if parts else sql.SQL("false")


def _contains(field: Field, value: Json, params: Params) -> sql.Composable:
    element = sql.SQL("({} AND {} @> jsonb_build_array({}))")
    if not isinstance(value, str):
        return element.format(field.typed("array"), field.value, params.add(Jsonb(value), "jsonb"))
    text = params.add(value, "text")
    return sql.SQL("(({} AND strpos({}, {}) > 0) OR {})").format(
        field.typed("string"), field.string, text,
        element.format(field.typed("array"), field.value, text),
    )  # fmt: skip


def order_by(keys: tuple[SortKey, ...], params: Params) -> sql.Composable:
    """Type rank, then number, string and JSON value, per key; `row_id` breaks ties."""
    terms: list[sql.Composable] = []
    for key in keys:
        field = Field(params.path(key.path))
        direction = sql.SQL("DESC" if key.descending else "ASC")
        rank = _TYPE_RANK.format(value=field.value)
        for term in (rank, field.number, field.string, _OTHER.format(value=field.value)):
            terms.append(sql.SQL("{} {}").format(term, direction))
    terms.append(sql.SQL("row_id"))
    return sql.SQL(", ").join(terms)


def updated(update: Update, params: Params) -> sql.Composable:
    """`row_data` after the update: one table_row_update() call per item, nested in order."""
    doc: sql.Composable = sql.SQL("row_data")
    for i, item in enumerate(update.items):
        doc = sql.SQL("table_row_update({}, {}, {}, {}, {})").format(
            doc, params.add(item.kind, "text"), params.path(item.path),
            params.add(Jsonb(item.value), "jsonb"), params.add(i, "integer"),
        )  # fmt: skip
    return doc


def index_ddl(table_id: int, n: int, path: Path) -> sql.Composed:
    """CREATE INDEX CONCURRENTLY for field `n` of a table.

    DDL takes no parameters, so the path is a quoted literal here (and the grammar of paths
    admits only letters, digits and `_`). The expressions are the ones `where` writes, so the
    planner matches them.
    """
    field = Field(sql.Literal(list(path)))
    return sql.SQL(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON table_rows (({number}), ({string})) "
        "WHERE table_id = {table_id} AND jsonb_typeof({value}) IN ('number', 'string')"
    ).format(
        name=sql.Identifier(index_name(table_id, n)),
        number=field.number,
        string=field.string,
        table_id=sql.Literal(table_id),
        value=field.value,
    )


def index_name(table_id: int, n: int) -> str:
    return INDEX_NAME.format(table_id=table_id, n=n)


def decimal(number: int | float) -> Decimal:
    """The exact decimal of a JSON number as it is stored: float8 -> numeric in PostgreSQL keeps
    only 15 digits, so 0.30000000000000004 would compare equal to 0.3."""
    return Decimal(number) if isinstance(number, int) else Decimal(repr(number))
