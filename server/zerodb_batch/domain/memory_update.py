"""Partial updates of memories: which columns each update sets, as flag and value arrays.

Without a mask an update sets the fields it carries: optional scalars when present, `tags` and
`metadata` when non-empty. A mask (the item's own, else the batch's) sets exactly the named
fields, and a named field the item leaves unset goes back to its default: that is how a caller
clears a field (AIP-134).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from zerodb.v1 import memory_pb2
from zerodb_batch import limits
from zerodb_batch.domain.memory import MEMORY, write_order
from zerodb_batch.domain.records import Columns, SliceParser
from zerodb_batch.domain.rules import Rules
from zerodb_batch.domain.validate import Checker

UPDATABLE: Final = (
    "content",
    "memory_type",
    "importance",
    "tags",
    "metadata",
    "session_id",
    "agent_id",
    "entity_id",
)
_ValueOf = Callable[[Checker, memory_pb2.MemoryUpdate], object]
_SET_WHEN_PRESENT: Final = frozenset(UPDATABLE) - {"metadata"}


@dataclass
class UpdateColumns(Columns):
    """Valid updates: each row's id and its changes (field -> new value), read as columns."""

    ids: list[str] = field(default_factory=list)
    changes: list[dict[str, object]] = field(default_factory=list)

    def add(self, index: int, memory_id: str, values: dict[str, object]) -> None:
        self.index.append(index)
        self.ids.append(memory_id)
        self.changes.append(values)

    def column(self, name: str) -> tuple[list[bool], list[object]] | None:
        """Per row, whether it sets field `name` and to what; None when no row sets it."""
        flags = [name in change for change in self.changes]
        if not any(flags):
            return None
        return flags, [change.get(name) for change in self.changes]


class UpdateParser(SliceParser[UpdateColumns]):
    """Validates the updates of a request in id order (the order their rows are locked in, so
    that slices written one after another lock as one statement would). A batch mask naming a
    field that cannot be updated is refused here, before any update is looked at."""

    def __init__(self, request: memory_pb2.BatchUpdateMemoriesRequest) -> None:
        updates = request.updates
        super().__init__(
            len(updates), UpdateColumns(), field_name="updates", partial=request.partial_success
        )
        batch_checker = Checker("")
        self._batch_mask = _mask(batch_checker, "update_mask", request.update_mask.paths)
        batch_checker.raise_if_any("update_mask names fields that cannot be updated")
        self._updates = updates
        self._order = write_order(updates)
        self._seen: dict[str, int] = {}

    def parse(self, stop: int) -> None:
        updates, order, batch_mask, seen = self._updates, self._order, self._batch_mask, self._seen
        rows, parsed = self.batch.rows, self.batch
        for position in range(self._parsed, stop):
            i = order[position]
            update = updates[i]
            if (values := _fast_values(update, batch_mask)) is not None and (
                seen.setdefault(update.id, i) == i
            ):
                rows.add(i, update.id, values)
                continue
            checker = Checker(f"updates[{i}]")
            values = _values(checker, update, batch_mask)
            checker.text("id", update.id, limits.MAX_ID_CHARS, required=True)
            if update.id and (first := seen.setdefault(update.id, i)) != i:
                checker.add("id", f"duplicates updates[{first}].id", "DUPLICATE_ID")
            if checker.violations:
                parsed.failures[i] = checker.violations
                parsed.sent_ids[i] = update.id
            else:
                rows.add(i, update.id, values)
        self._parsed = max(self._parsed, stop)


def _fast_values(
    u: memory_pb2.MemoryUpdate, batch_mask: tuple[str, ...] | None
) -> dict[str, object] | None:
    """The values of an update without a mask of its own, by the rules' fast paths (as upserts
    take them); None when the update must take the full check, which decides and names why."""
    uid = u.id
    if u.update_mask.paths or not uid or len(uid) > limits.MAX_ID_CHARS or "\x00" in uid:
        return None
    fields = batch_mask if batch_mask is not None else _present(u)
    values = {}
    for name in fields:
        if (value := _FAST[name](u)) is None:
            return None
        values[name] = _STORED[name](value[0])
    return values or None


def _mask(checker: Checker, name: str, paths: Sequence[str]) -> tuple[str, ...] | None:
    """The fields a mask names (`*` is all of them); None for no mask."""
    if not paths:
        return None
    for j, path in enumerate(paths):
        if path != "*" and path not in UPDATABLE:
            checker.add(
                f"{name}.paths[{j}]",
                f"{path!r} cannot be updated; use {', '.join(UPDATABLE)} or *",
                "UNKNOWN_FIELD",
            )
    return UPDATABLE if "*" in paths else tuple(p for p in UPDATABLE if p in paths)


def _values(
    c: Checker, u: memory_pb2.MemoryUpdate, batch_mask: tuple[str, ...] | None
) -> dict[str, object]:
    """The new value of every field this update sets, checked."""
    own = _mask(c, "update_mask", u.update_mask.paths)
    fields = own if own is not None else batch_mask if batch_mask is not None else _present(u)
    if own is None and not fields:
        c.add(
            "update_mask",
            "nothing to change: set a field, or name fields in update_mask",
            "EMPTY_UPDATE",
        )
    return {name: _VALUE[name](c, u) for name in fields}


def _present(u: memory_pb2.MemoryUpdate) -> tuple[str, ...]:
    """The fields an update without a mask sets, in field order. ListFields names the set
    fields in one call (an unset optional, empty tags and no metadata are left out); a
    metadata Struct sent empty sets nothing."""
    return tuple(
        name
        for fd, value in u.ListFields()
        if (name := fd.name) in _SET_WHEN_PRESENT or (name == "metadata" and value.fields)
    )


def _stored(name: str) -> Callable[[object], object]:
    """A field's checked value as memory_update takes it."""
    if name in ("session_id", "agent_id", "entity_id"):
        return lambda scope: scope or None  # an empty scope is no scope, as on insert
    return lambda value: value


def _value(name: str) -> _ValueOf:
    """The new value of a field, checked by the memory rules (the same as upsert's)."""
    check, stored = MEMORY.by_name[name].check, _STORED[name]
    return lambda c, u: stored(check(c, u))


_STORED: Final = {name: _stored(name) for name in UPDATABLE}
_VALUE: Final[dict[str, _ValueOf]] = {name: _value(name) for name in UPDATABLE}
_UPDATE_FIELDS: Final = tuple(memory_pb2.MemoryUpdate.DESCRIPTOR.fields_by_name)
# Each field's fast path alone: (value,) or None when in doubt.
_FAST: Final = {
    name: Rules(f"MemoryUpdate.{name}", MEMORY.by_name[name].for_fields(_UPDATE_FIELDS)).fast
    for name in UPDATABLE
}
