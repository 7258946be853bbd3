"""Per-item results of every write batch: one `ItemResult` per input item, in input order, and
the counters of the response.

A batch's code says what happened to each valid item (`Outcomes.set`); refused items are already
known from validation. `fill` then writes the response's `results`, its counters (each response
names them its own way: `inserted`, `published`, `created`, ...) and, where the response has
one, its `ids` list. A refused item's result echoes the id the client sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TypeAlias, TypeVar

from google.protobuf.message import Message

from zerodb.v1 import common_pb2
from zerodb_batch.domain.records import ParsedBatch
from zerodb_batch.errors import InvalidArgument, Violation
from zerodb_batch.observability import calls

Outcome: TypeAlias = common_pb2.Outcome.ValueType
M = TypeVar("M", bound=Message)
INSERTED: Final = common_pb2.OUTCOME_INSERTED
UPDATED: Final = common_pb2.OUTCOME_UPDATED
DELETED: Final = common_pb2.OUTCOME_DELETED
NOT_FOUND: Final = common_pb2.OUTCOME_NOT_FOUND
FAILED: Final = common_pb2.OUTCOME_FAILED
_DONE: Final = frozenset((INSERTED, UPDATED, DELETED))  # written as asked
View: TypeAlias = common_pb2.ResultView.ValueType
# Outcomes as the metrics name them: inserted, updated, deleted, not_found, failed, ...
_NAMES: Final = {v: n.removeprefix("OUTCOME_").lower() for n, v in common_pb2.Outcome.items()}


class Outcomes:
    """What happened to each item of a batch, by its index in the request."""

    __slots__ = ("failures", "ids", "outcomes")

    def __init__(self, total: int, batch: ParsedBatch[Any] | None = None) -> None:
        self.ids = [""] * total
        self.outcomes: list[Outcome] = [common_pb2.OUTCOME_UNSPECIFIED] * total
        self.failures: Mapping[int, Sequence[Violation]] = batch.failures if batch else {}
        for index in self.failures:
            self.outcomes[index] = FAILED
            self.ids[index] = batch.sent_ids.get(index, "") if batch else ""

    def set(self, index: int, item_id: str, outcome: Outcome) -> None:
        self.ids[index] = item_id
        self.outcomes[index] = outcome

    def set_all(self, indexes: Iterable[int], ids: Iterable[str], outcome: Outcome) -> None:
        for index, item_id in zip(indexes, ids, strict=True):
            self.ids[index] = item_id
            self.outcomes[index] = outcome


def delete_outcomes(ids: Sequence[str], deleted: set[str]) -> Outcomes:
    """One outcome per id in request order; an id repeated in the request is deleted once."""
    outcomes = Outcomes(len(ids))
    if len(deleted) == len(ids):  # then the ids are distinct and every one was deleted
        outcomes.ids[:] = ids
        outcomes.outcomes[:] = [DELETED] * len(ids)
        return outcomes
    counted: set[str] = set()
    for index, item_id in enumerate(ids):
        gone = item_id in deleted and item_id not in counted
        counted.add(item_id)
        outcomes.set(index, item_id, DELETED if gone else NOT_FOUND)
    return outcomes


def fill(
    response: M,
    outcomes: Outcomes,
    counters: Mapping[Outcome, str],
    view: View = common_pb2.RESULT_VIEW_FULL,
) -> M:
    """Write `outcomes` into a batch response: the counters named in `counters` (outcome ->
    field) and, as far as the request's `view` asks, `results` and (if the response has it)
    `ids` (empty for a refused item)."""
    counted = Counter(outcomes.outcomes)
    calls.record_items(len(outcomes.outcomes), {_NAMES[o]: n for o, n in counted.items()})
    for outcome, name in counters.items():
        setattr(response, name, counted[outcome])
    if view == common_pb2.RESULT_VIEW_COUNTS:
        return response
    only_failures = view == common_pb2.RESULT_VIEW_FAILURES
    if not (only_failures and counted.keys() <= _DONE):  # else there is no result to write
        _add_results(getattr(response, "results"), outcomes, only_failures)  # noqa: B009
    if "ids" in type(response).DESCRIPTOR.fields_by_name:
        getattr(response, "ids").extend(  # noqa: B009
            outcomes.ids
            if FAILED not in counted
            else (
                "" if outcome == FAILED else item_id
                for item_id, outcome in zip(outcomes.ids, outcomes.outcomes, strict=True)
            )
        )
    return response


def _add_results(items: Any, outcomes: Outcomes, only_failures: bool) -> None:
    add = items.add  # built in place: no per-item message copies
    for index, (item_id, outcome) in enumerate(zip(outcomes.ids, outcomes.outcomes, strict=True)):
        if outcome == FAILED:
            items.append(failed(index, item_id, outcomes.failures[index]))
        elif not only_failures or outcome not in _DONE:
            item = add()  # fields set one by one: 40% faster than add(**fields) (upb)
            item.index = index
            item.id = item_id
            item.outcome = outcome


def failed(index: int, item_id: str, violations: Sequence[Violation]) -> common_pb2.ItemResult:
    """A refused item, its `error` an INVALID_ARGUMENT status naming every bad field."""
    error = InvalidArgument(f"item {index} is invalid", violations=violations).to_status()
    return common_pb2.ItemResult(index=index, id=item_id, outcome=FAILED, error=error)
