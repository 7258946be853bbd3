"""Update operators of table rows (`$set $inc $unset $push $pull`), parsed and checked.

    {"$set": {"status": "done", "stats.last": "2026-01-01"}, "$inc": {"stats.runs": 1}}

Semantics (applied to each matching row; they are also the SQL functions' in 0005_tables.sql):
- `$set {path: value}` sets the field, creating missing parent objects;
- `$inc {path: number}` adds to a number field (exact decimal arithmetic); a missing field is
  set to the number;
- `$unset {path: any}` removes the field when it is there;
- `$push {path: value}` appends `value` (as one element, even an array) to an array field; a
  missing field becomes `[value]`;
- `$pull {path: value}` removes every element equal to `value` (filter equality) from an array
  field; a missing field stays missing.
Update paths walk objects only (a digit part is an object key here). A row where a path meets
something else fails the whole operation, which then changes nothing (as in MongoDB): `$inc` on
a field that is not a number (null included), `$push` or `$pull` on one that is not an array, or a
parent of the path that is not an object. The error names the update's field, e.g.
`operations[3].update.$inc.count`.

A field may be named once in an update, and never together with a field under it (`a` and
`a.b`), so the order in which the fields are applied cannot matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from zerodb_batch import limits
from zerodb_batch.domain.table_fields import Json, Path, check_json, is_number, join, read_path
from zerodb_batch.domain.table_filter import json_type
from zerodb_batch.domain.validate import Checker

OPERATORS: Final = ("$set", "$unset", "$inc", "$push", "$pull")


@dataclass(frozen=True)
class UpdateItem:
    """One field of an update: `kind` is the operator without `$`; `field` is where the item
    came from in the request, for errors met while applying it."""

    kind: str
    path: Path
    value: Json
    field: str


@dataclass(frozen=True)
class Update:
    """The items of an update, in a fixed order (operator, then path)."""

    items: tuple[UpdateItem, ...]


def read_update(c: Checker, at: str, value: Json) -> Update:
    """Parse the update object found at `at`, adding its violations to `c` (a Checker without
    prefix: `at` is the whole path, such as `operations[3].update`)."""
    if not isinstance(value, dict) or not value:
        c.add(at, f"must be an object with at least one of {', '.join(OPERATORS)}", "EMPTY_UPDATE")
        return Update(())
    items: list[UpdateItem] = []
    for op, fields in value.items():
        here = join(at, op)
        if op not in OPERATORS:
            c.add(here, f"unknown update operator {op}; use one of {', '.join(OPERATORS)}",
                  "UNKNOWN_OPERATOR")  # fmt: skip
        elif not isinstance(fields, dict) or not fields:
            c.add(here, "must be a non-empty object of field paths", "INVALID_UPDATE")
        else:
            items.extend(_items(c, here, op[1:], fields))
    order = {op[1:]: i for i, op in enumerate(OPERATORS)}
    items.sort(key=lambda item: (order[item.kind], item.path))  # JSON objects keep no order
    _check_overlaps(c, at, items)
    return Update(tuple(items))


def _items(c: Checker, at: str, kind: str, fields: dict[str, Json]) -> list[UpdateItem]:
    items = []
    for key, value in fields.items():
        here = join(at, key)
        path = read_path(c, here, key)
        if path is None or not check_json(c, here, value):
            continue
        if kind == "inc" and not is_number(value):
            c.add(here, f"$inc takes a number, got {json_type(value)}", "TYPE_MISMATCH")
            continue
        items.append(UpdateItem(kind, path, None if kind == "unset" else value, here))
    return items


def _check_overlaps(c: Checker, at: str, items: list[UpdateItem]) -> None:
    if len(items) > limits.MAX_UPDATE_FIELDS:
        c.add(at, f"at most {limits.MAX_UPDATE_FIELDS} fields, got {len(items)}", "TOO_MANY")
        return
    for i, item in enumerate(items):
        for earlier in items[:i]:
            short, long = sorted((earlier.path, item.path), key=len)
            if long[: len(short)] == short:
                c.add(item.field, f"conflicts with {earlier.field}: a field may be updated once, "
                      "and not together with a field inside it", "CONFLICTING_UPDATE")  # fmt: skip
                break
