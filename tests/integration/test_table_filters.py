"""Filters and sorts on real PostgreSQL against the reference evaluation in table_reference.py:
generated documents (missing fields, nulls, nested objects, arrays, mixed types, unicode) and
generated filters (every operator, $and/$or/$not, nested), on a table without indexes and on one
with an index on most fields, which the planner is made to choose (see Pair: about a third of the
generated filters are read through an index). Both must give exactly the reference's rows."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration import table_reference as ref
from tests.plugins.tables import Pair, through_struct
from zerodb_batch import limits
from zerodb_batch.domain.table_filter import parse_filter
from zerodb_batch.domain.table_ops import RowQuery, SortKey

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(docs=st.lists(ref.documents, min_size=5, max_size=20), data=st.data())
def test_filters_match_the_reference(
    pair: Pair, docs: list[dict[str, Any]], data: st.DataObject
) -> None:
    stored = pair.load(docs)
    flt = through_struct(data.draw(ref.filters(ref.pool(docs)), label="filter"))
    query = RowQuery(filter=parse_filter(flt, "filters"), limit=limits.MAX_QUERY_LIMIT)
    for table in (pair.plain, pair.indexed):
        expected = {i for i, doc in stored[table.name].items() if ref.matches(doc, flt)}
        assert set(pair.ids(table, query)) == expected, (table.name, flt)


SORT_FIELDS = ["a", "n", "s"]
sort_documents = st.fixed_dictionaries(
    {}, optional={"a": ref.scalars, "n": ref.numbers | ref.scalars, "s": ref.strings | ref.scalars}
)


@SETTINGS
@given(
    docs=st.lists(sort_documents, max_size=15),
    keys=st.lists(st.tuples(st.sampled_from(SORT_FIELDS), st.booleans()), min_size=1, max_size=2,
                  unique_by=lambda k: k[0]),
    skip=st.integers(0, 4),
    limit=st.integers(1, 6),
)  # fmt: skip
def test_sorts_match_the_reference(
    pair: Pair, docs: list[dict[str, Any]], keys: list[tuple[str, bool]], skip: int, limit: int
) -> None:
    stored = pair.load(docs)
    sort = tuple(SortKey(tuple(path.split(".")), desc) for path, desc in keys)
    query = RowQuery(sort=sort, skip=skip, limit=limit)
    for table in (pair.plain, pair.indexed):
        expected = ref.sorted_rows(list(stored[table.name].items()), keys)
        page = pair.page(table, query)
        assert [row.row_id for row in page.rows] == expected[skip : skip + limit]
        assert page.has_more == (len(expected) > skip + limit)
