"""A plain Python evaluation of table filters and sorts, written from the documented rules (not from
the parser or the SQL), and hypothesis strategies for documents, filters and sorts.

The strategies draw from small value domains (a few numbers, short strings over an alphabet with
upper and lower case, accents, an emoji and a newline) so that equalities and orderings between
generated values are frequent, and every JSON type appears at every field.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cmp_to_key
from typing import Any

from hypothesis import strategies as st

MISSING = object()
_RANK = {"null": 0, "number": 1, "string": 2, "object": 3, "array": 4, "boolean": 5}


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def number(value: int | float) -> Decimal:
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


def lookup(doc: Any, path: str) -> Any:
    node = doc
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
    return node


def equal(a: Any, b: Any) -> bool:
    if kind(a) != kind(b):
        return False
    if kind(a) == "number":
        return number(a) == number(b)
    if kind(a) == "array":
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if kind(a) == "object":
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    return bool(a == b)


def matches(doc: dict[str, Any], flt: dict[str, Any]) -> bool:
    return all(_entry(doc, key, value) for key, value in flt.items())


def _entry(doc: dict[str, Any], key: str, value: Any) -> bool:
    if key == "$and":
        return all(matches(doc, f) for f in value)
    if key == "$or":
        return any(matches(doc, f) for f in value)
    if key == "$not":
        return not matches(doc, value)
    field = lookup(doc, key)
    if isinstance(value, dict) and any(k.startswith("$") for k in value):
        return _operators(field, value)
    return field is not MISSING and equal(field, value)


def _operators(field: Any, ops: dict[str, Any]) -> bool:
    return all(_operator(field, op, operand) for op, operand in ops.items())


def _operator(field: Any, op: str, operand: Any) -> bool:
    present = field is not MISSING
    if op == "$eq":
        return present and equal(field, operand)
    if op == "$ne":
        return not (present and equal(field, operand))
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return present and kind(field) == kind(operand) and _ordered(op, field, operand)
    if op == "$in":
        return present and any(equal(field, v) for v in operand)
    if op == "$nin":
        return not (present and any(equal(field, v) for v in operand))
    if op == "$contains":
        if isinstance(operand, str) and kind(field) == "string":
            return operand in field
        return kind(field) == "array" and any(equal(e, operand) for e in field)
    if op == "$regex":
        return kind(field) == "string" and python_regex(operand).search(field) is not None
    if op == "$exists":
        return present == operand
    if op == "$not":
        return not _operators(field, operand)
    raise AssertionError(f"reference has no {op}")


def _ordered(op: str, a: Any, b: Any) -> bool:
    x, y = (number(a), number(b)) if kind(a) == "number" else (a, b)
    return {"$gt": x > y, "$gte": x >= y, "$lt": x < y, "$lte": x <= y}[op]


# Regex tokens: (PostgreSQL form, Python form). `$` is end of string in PostgreSQL's ARE; in
# Python `$` also matches before a final newline, so it becomes `\Z`.
REGEX_TOKENS = [
    ("a", "a"), ("B", "B"), ("é", "é"), ("😀", "😀"), (".", "."), ("\\d", "\\d"), ("\\w", "\\w"),
    ("\\s", "\\s"), ("[a-c]", "[a-c]"), ("[^a]", "[^a]"), ("\\.", "\\."), ("\\n", "\\n"),
]  # fmt: skip
REGEX_QUANTIFIERS = ["", "", "*", "+", "?", "{1,2}", "*?"]


@st.composite
def regexes(draw: st.DrawFn) -> tuple[str, str]:
    """(pattern for the server, the same pattern for Python's re)."""
    pieces = draw(st.lists(st.tuples(st.sampled_from(REGEX_TOKENS),
                                     st.sampled_from(REGEX_QUANTIFIERS)), max_size=4))  # fmt: skip
    pg = "".join(t[0] + q for t, q in pieces)
    py = "".join(t[1] + q for t, q in pieces)
    if draw(st.booleans()):
        pg, py = "^" + pg, "^" + py
    if draw(st.booleans()):
        pg, py = pg + "$", py + "\\Z"
    if draw(st.booleans()):
        pg, py = f"({pg})|a", f"({py})|a"
    _PYTHON_FORMS[pg] = py
    return pg, py


_PYTHON_FORMS: dict[str, str] = {}


def python_regex(pattern: str) -> re.Pattern[str]:
    """Python's form of a pattern `regexes` made (ASCII classes, `.` matches newlines)."""
    return re.compile(_PYTHON_FORMS.get(pattern, pattern), re.ASCII | re.DOTALL)


ALPHABET = "aAbBé😀 \n1"
strings = st.sampled_from(["", "a", "A", "b", "ab", "é", "😀", "1", "10", "9"]) | st.text(
    ALPHABET, max_size=3
)
numbers = st.sampled_from([0, 1, -1, 1.5, 2, 10, 9, 0.1, 1e20, -2.5]) | st.integers(-3, 3)
scalars = st.none() | st.booleans() | numbers | strings
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from("xy"), inner, max_size=2),
    max_leaves=5,
)  # fmt: skip
operands = st.one_of(scalars, scalars, scalars, values)  # mostly scalars: equal more often
PATHS = ["a", "b", "n", "s", "t", "t.x", "t.y", "arr", "arr.0", "arr.1", "zz"]

documents = st.fixed_dictionaries(
    {},
    optional={
        "a": scalars, "b": values, "n": numbers | scalars, "s": strings | scalars,
        "t": st.dictionaries(st.sampled_from("xy"), scalars, max_size=2) | scalars,
        "arr": st.lists(scalars, max_size=3) | scalars,
    },
)  # fmt: skip


def pool(docs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The values found at each filter path of `docs`: operands drawn from them match often."""
    found = {path: [lookup(doc, path) for doc in docs] for path in PATHS}
    return {path: [v for v in vs if v is not MISSING] for path, vs in found.items()}


def _condition(draw: st.DrawFn, found: list[Any]) -> Any:
    op = draw(st.sampled_from(["bare", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin",
                               "$contains", "$regex", "$exists"]))  # fmt: skip
    some = st.one_of(st.sampled_from(found), operands) if found else operands
    if op == "bare":
        return draw(some)
    if op in ("$eq", "$ne"):
        return {op: draw(some)}
    if op in ("$gt", "$gte", "$lt", "$lte"):
        ordered = [v for v in found if kind(v) in ("number", "string")]
        return {
            op: draw(st.sampled_from(ordered) | numbers | strings if ordered else numbers | strings)
        }
    if op in ("$in", "$nin"):
        return {op: draw(st.lists(some, max_size=4))}
    if op == "$contains":
        scalar = [v for v in found if kind(v) not in ("array", "object")]
        return {op: draw(st.sampled_from(scalar) | scalars if scalar else scalars)}
    if op == "$regex":
        return {op: draw(regexes())[0]}
    return {op: draw(st.booleans())}


def _operators_of(condition: Any) -> bool:
    return isinstance(condition, dict) and bool(condition) and all(k[0] == "$" for k in condition)


@st.composite
def filters(draw: st.DrawFn, found: dict[str, list[Any]], depth: int = 0) -> dict[str, Any]:
    """A filter object: field conditions, sometimes several operators on a field, a field-level
    $not, and top-level $and / $or / $not, nested a little. Operands are often values `found` in
    the documents."""
    out: dict[str, Any] = {}
    for path in draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=2, unique=True)):
        condition = _condition(draw, found[path])
        if _operators_of(condition) and draw(st.integers(0, 4)) == 0:
            extra = _condition(draw, found[path])
            if _operators_of(extra) and not set(extra) & set(condition):
                condition = {**condition, **extra}
        if _operators_of(condition) and draw(st.integers(0, 5)) == 0:
            condition = {"$not": condition}
        out[path] = condition
    if depth < 2 and draw(st.integers(0, 3)) == 0:
        key = draw(st.sampled_from(["$and", "$or", "$not"]))
        if key == "$not":
            out[key] = draw(filters(found, depth + 1))
        else:
            out[key] = draw(st.lists(filters(found, depth + 1), min_size=1, max_size=3))
    return out


def sort_key(doc: dict[str, Any], path: str) -> tuple[int, Any]:
    """(type rank, value) of a scalar field, as the documented sort orders them."""
    value = lookup(doc, path)
    if value is MISSING or value is None:
        return (0, 0)
    rank = _RANK[kind(value)]
    return (rank, number(value) if rank == 1 else value)


def sorted_rows(rows: list[tuple[str, dict[str, Any]]], keys: list[tuple[str, bool]]) -> list[str]:
    """Row ids in the order of `keys` ((path, descending) each), ties by row id."""

    def compare(a: tuple[str, dict[str, Any]], b: tuple[str, dict[str, Any]]) -> int:
        for path, descending in keys:
            ka, kb = sort_key(a[1], path), sort_key(b[1], path)
            if ka != kb:
                return (1 if ka > kb else -1) * (-1 if descending else 1)
        return (a[0] > b[0]) - (a[0] < b[0])

    return [row_id for row_id, _ in sorted(rows, key=cmp_to_key(compare))]
