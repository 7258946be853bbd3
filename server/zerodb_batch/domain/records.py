"""Validating the records of a batch or a streamed chunk against their entity's rules.

The parser works a slice at a time so that a writer can send each slice while the next is being
checked; duplicate ids are caught across slices. Valid records go to a `Rows` sink, the form in
which storage writes them (column arrays for `unnest`, lines for COPY, ...).
"""

from __future__ import annotations

import copy
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Generic, Protocol, Self, TypeVar

from zerodb_batch.domain.rules import Rules
from zerodb_batch.domain.validate import Checker
from zerodb_batch.errors import InvalidArgument, Violation


class Rows(Protocol):
    """Where valid records go: `add` takes the request index, then the values of the entity's
    rules in their order (a keyed entity's id already generated when the client sent none)."""

    def __len__(self) -> int: ...

    @property
    def add(self) -> Callable[..., None]:
        """(index, *values): each kind names its values, so the protocol cannot."""


class SliceableRows(Rows, Protocol):
    """A sink whose rows can be taken from a position on, to be written a slice at a time."""

    def since(self, start: int) -> Self: ...


@dataclass
class Columns:
    """Valid records as parallel lists, one per column, ready for `unnest`: a kind's subclass adds
    its columns and an `add` that appends to each. `index` is each row's position in the request.
    """

    index: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.index)

    def since(self, start: int, stop: int | None = None) -> Self:
        """The rows from position `start` on (to `stop`), as columns of their own."""
        part = copy.copy(self)
        for column in fields(self):
            if isinstance(value := getattr(self, column.name), list):
                setattr(part, column.name, value[start:stop])
        return part


R = TypeVar("R", bound=Rows)
S = TypeVar("S", bound=SliceableRows)
T = TypeVar("T")


@dataclass
class ParsedBatch(Generic[T]):
    """The valid rows of a batch and, by request index, the violations of each invalid record."""

    rows: T
    failures: dict[int, list[Violation]] = field(default_factory=dict)
    sent_ids: dict[int, str] = field(default_factory=dict)  # the id a refused record carried


class SliceParser(ABC, Generic[R]):
    """Validates the `total` items of a batch into `rows`, a slice at a time: a kind's subclass
    says how in `parse`.

    `finish()` gives the whole batch; in atomic mode (`partial=False`) it raises INVALID_ARGUMENT
    listing every violation, so the caller must not commit before it.
    """

    def __init__(self, total: int, rows: R, *, field_name: str, partial: bool) -> None:
        self._total, self._field_name, self._partial = total, field_name, partial
        self._parsed = 0  # items validated so far
        self.batch = ParsedBatch(rows)

    @property
    def writable(self) -> bool:
        """False once an atomic batch has an invalid item: nothing of it will be written."""
        return self._partial or not self.batch.failures

    @property
    def parsed(self) -> int:
        """How many items have been validated."""
        return self._parsed

    @abstractmethod
    def parse(self, stop: int) -> None:
        """Validate the items up to position `stop`, adding the valid ones to the rows."""

    async def send_in_slices(
        self: SliceParser[S], size: int, send: Callable[[S], Awaitable[T]]
    ) -> tuple[ParsedBatch[S], list[T]]:
        """Validate `size` items at a time and hand each slice's valid rows to `send`, which
        sends them without waiting (pipeline mode), so PostgreSQL writes a slice while the next
        is validated. Once an atomic batch has an invalid item nothing more is sent, and
        finish() raises: the caller's transaction must roll back on it. Returns the batch and
        what each `send` returned, in order."""
        total, sent = self._total, []
        for stop in range(size, total + size, size):
            first = len(self.batch.rows)
            self.parse(min(stop, total))
            if self.writable:
                sent.append(await send(self.batch.rows.since(first)))
        return self.finish(), sent

    def finish(self) -> ParsedBatch[R]:
        """The batch, its failures in request order however it was validated (a kind's writes
        go in lock order); INVALID_ARGUMENT for an atomic batch with an invalid item."""
        assert self._parsed == self._total, "finish() before every item was parsed"
        self.batch.failures = dict(sorted(self.batch.failures.items()))
        _refuse_if_atomic(self.batch, self._total, self._field_name, self._partial)
        return self.batch

    def parse_all(self) -> ParsedBatch[R]:
        self.parse(self._total)
        return self.finish()


class RecordParser(SliceParser[R]):
    """Validates `records` by their entity's `rules`, in the given `order` of indexes (default:
    as sent)."""

    def __init__(
        self,
        records: Sequence[Any],
        rules: Rules,
        rows: R,
        *,
        field_name: str,
        partial: bool,
        order: Sequence[int] | None = None,
    ) -> None:
        super().__init__(len(records), rows, field_name=field_name, partial=partial)
        self._records, self._rules = records, rules
        self._order = order
        self._seen: dict[object, int] = {}  # an id, or (scope, id)

    def parse(self, stop: int) -> None:
        """Validate the records up to position `stop` of the order, adding the valid ones."""
        records, order, fast, seen = self._records, self._order, self._rules.fast, self._seen
        keyed, scope, add = self._rules.keyed, self._rules.scope, self.batch.rows.add
        for position in range(self._parsed, stop):
            i = order[position] if order is not None else position
            record = records[i]
            # The fast path takes almost every record; the full check decides the rest.
            values = fast(record)
            if values is not None and keyed:
                if rid := values[0]:
                    key = rid if scope is None else (values[scope], rid)
                    if seen.setdefault(key, i) != i:
                        values = None  # a duplicate: the full check says of which record
                else:
                    values = (str(uuid.uuid4()), *values[1:])
            if values is None:
                self._check_fully(i, record)
            else:
                add(i, *values)
        self._parsed = max(self._parsed, stop)

    def _check_fully(self, i: int, record: Any) -> None:
        checker = Checker(f"{self._field_name}[{i}]")
        values = self._rules.check(checker, record)
        rid = values[0] if self._rules.keyed else ""
        key = rid if self._rules.scope is None else (values[self._rules.scope], rid)
        if rid and (first := self._seen.setdefault(key, i)) != i:
            checker.add("id", f"duplicates {self._field_name}[{first}].id", "DUPLICATE_ID")
        if checker.violations:
            self.batch.failures[i] = checker.violations
            self.batch.sent_ids[i] = str(rid)
        elif self._rules.keyed and not rid:
            self.batch.rows.add(i, str(uuid.uuid4()), *values[1:])
        else:  # valid after all (say, long content within the byte limit)
            self.batch.rows.add(i, *values)


def positions_by(keys: Sequence[Any]) -> list[int]:
    """The positions of `keys` in the order of their keys; equal keys keep their order."""
    return sorted(range(len(keys)), key=keys.__getitem__)


def _refuse_if_atomic(batch: ParsedBatch[Any], total: int, field_name: str, partial: bool) -> None:
    """An atomic batch (not `partial`) with an invalid item: INVALID_ARGUMENT naming them all."""
    if batch.failures and not partial:
        raise InvalidArgument(
            f"{len(batch.failures)} of {total} {field_name} are invalid; nothing was written",
            violations=[v for vs in batch.failures.values() for v in vs],
        )
