"""Similarity search in one namespace: exact while it is small, its own HNSW index once large.

A namespace's HNSW index (built by storage/vector_index.py) holds its rows up to a sequence
number; rows written since are searched exactly through the btree, and both parts are merged in
one statement. A namespace without an index (small, or its first build still running) is searched
exactly: 100% recall. The index serves cosine; L2 and inner-product searches are exact.

A metadata filter arrives as a `Condition` compiled elsewhere (the filter language of tables).
The index is scanned iteratively (pgvector 0.8's `hnsw.iterative_scan`) until `top_k` rows pass
the filter; if the scan gives up first (`hnsw.max_scan_tuples`), the search is redone exactly, so
a search returns `top_k` results whenever that many rows match. A minimum similarity is applied
to those `top_k`, so it never makes a search exact.
"""

from __future__ import annotations

import enum
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import class_row

from zerodb_batch.domain.table_filter import Filter, is_empty
from zerodb_batch.errors import InvalidArgument, Violation
from zerodb_batch.limits import MAX_TOP_K
from zerodb_batch.storage import table_sql
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.queries import Q
from zerodb_batch.storage.vectors import Embedding, hnsw_type, register_types


class Metric(enum.Enum):
    """A distance, by its pgvector operator. similarity = 1 - distance for cosine, and
    -distance otherwise (the inner product; the negated Euclidean distance)."""

    COSINE = "<=>"
    L2 = "<->"
    INNER_PRODUCT = "<#>"

    def similarity(self, distance: float) -> float:
        return 1.0 - distance if self is Metric.COSINE else -distance


@dataclass(frozen=True)
class Condition:
    """A SQL condition on the `metadata` column (jsonb), with the values of its named
    placeholders (`%(name)s`), as the table filter compiler makes them."""

    sql: sql.Composable
    params: Mapping[str, object] = field(default_factory=dict)


def metadata_condition(tree: Filter) -> Condition | None:
    """A metadata filter of the table filter language as a search's condition (None when it
    has no condition at all)."""
    if is_empty(tree):
        return None
    params = table_sql.Params()
    return Condition(table_sql.where(tree, params, _METADATA), params.values)


@dataclass(frozen=True)
class Search:
    """One search: the `top_k` vectors of `namespace` nearest to `query`."""

    namespace: str
    query: Embedding
    top_k: int = 10
    metric: Metric = Metric.COSINE
    min_similarity: float | None = None
    condition: Condition | None = None
    include_embeddings: bool = False


@dataclass(frozen=True)
class Tuning:
    """How hard the index is searched. ef_search 100 gave recall@10 >= 0.97 at dim 384 and 1536
    here (bench/vectors.py); a search raises it to top_k for larger k (pgvector's maximum is
    1000). Index scans are iterative (relaxed order: the statement orders the rows itself)."""

    ef_search: int = 100
    max_scan_tuples: int = 20_000  # index tuples a filtered search scans before going exact


@dataclass(frozen=True)
class Match:
    id: str
    similarity: float
    distance: float  # the metric's own: cosine distance, L2 distance, negated inner product
    metadata: dict[str, Any]
    document: str | None
    embedding: Embedding | None  # only when asked for
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class IndexedNamespace:
    """What a search needs of its namespace."""

    dim: int
    index_name: str | None
    index_seq: int | None


_RESERVED: Final = frozenset({"query", "top_k"})
_METADATA: Final = sql.Identifier("metadata")
# The HNSW settings each connection has for its session (see _tune).
_TUNED: weakref.WeakKeyDictionary[Conn, Tuning] = weakref.WeakKeyDictionary()


class NamespaceCache:
    """What searches read of their namespaces, kept for `seconds` (the `size` most recently
    used). A stale entry is still correct: the dimension never changes, and the entry's sequence
    number splits the rows between index and exact scan whichever index serves now; after a
    rebuild a search may only be slower until the entry expires. Absent namespaces are not kept."""

    def __init__(self, seconds: float = 1.0, size: int = 10_000) -> None:
        self._seconds, self._size = seconds, size
        self._entries: OrderedDict[tuple[str, str], tuple[IndexedNamespace, float]] = OrderedDict()

    async def get(self, conn: Conn, project_id: str, namespace: str) -> IndexedNamespace | None:
        key, now = (project_id, namespace), time.monotonic()
        if (hit := self._entries.get(key)) and hit[1] > now:
            self._entries.move_to_end(key)
            return hit[0]
        found = await namespace_info(conn, project_id, namespace)
        if found is not None:
            self._entries[key] = (found, now + self._seconds)
            self._entries.move_to_end(key)
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return found


async def search(
    conn: Conn,
    project_id: str,
    spec: Search,
    tuning: Tuning = Tuning(),
    namespaces: NamespaceCache | None = None,
) -> list[Match]:
    """The nearest vectors, nearest first ([] for a namespace that does not exist). Raises
    InvalidArgument when the query's dimension is not the namespace's. One round trip with a
    NamespaceCache on a connection that has searched before; three at most."""
    await register_types(conn)
    lookup = namespaces.get if namespaces else namespace_info
    namespace = await lookup(conn, project_id, spec.namespace)
    if namespace is None:
        return []
    _check_query(spec, namespace.dim)
    await _tune(conn, replace(tuning, ef_search=min(max(tuning.ef_search, spec.top_k), MAX_TOP_K)))
    filtered = spec.condition is not None
    found = await _run(conn, *statement(project_id, namespace, spec), filtered=filtered)
    if len(found) < spec.top_k and _uses_index(namespace, spec):
        # The index scan gave up before top_k rows passed the filter: find them exactly.
        exact = statement(project_id, namespace, spec, exact=True)
        found = await _run(conn, *exact, filtered=filtered)
    matches = (row.match(spec) for row in found)
    if spec.min_similarity is None:
        return list(matches)
    return [m for m in matches if m.similarity >= spec.min_similarity]


async def namespace_info(conn: Conn, project_id: str, namespace: str) -> IndexedNamespace | None:
    """The namespace's dimension and serving index; None if it does not exist."""
    cur = conn.cursor(row_factory=class_row(IndexedNamespace))
    await cur.execute(Q["vector_namespace_get"], {"project_id": project_id, "namespace": namespace})
    return await cur.fetchone()


async def _tune(conn: Conn, tuning: Tuning) -> None:
    """Give the connection's session these HNSW settings, unless it has them: settings of the
    session, not of a transaction, so that a search needs no BEGIN and COMMIT around them.
    (Remembered only outside a transaction: a rollback would undo them.)"""
    if _TUNED.get(conn) == tuning:
        return
    params = (str(tuning.ef_search), str(tuning.max_scan_tuples))
    await conn.execute(Q["vector_search_settings"], params)
    if conn.info.transaction_status == TransactionStatus.IDLE:
        _TUNED[conn] = tuning
    else:
        _TUNED.pop(conn, None)


def _check_query(spec: Search, dim: int) -> None:
    if len(spec.query) != dim:
        raise InvalidArgument(
            f"query_vector has {len(spec.query)} dimensions; namespace {spec.namespace!r} holds "
            f"{dim}-dimensional vectors",
            violations=[
                Violation("query_vector", f"must have {dim} dimensions", "DIMENSION_MISMATCH")
            ],
            reason="DIMENSION_MISMATCH",
        )


def _uses_index(namespace: IndexedNamespace, spec: Search) -> bool:
    return namespace.index_seq is not None and spec.metric is Metric.COSINE


def statement(
    project_id: str, namespace: IndexedNamespace, spec: Search, *, exact: bool = False
) -> tuple[sql.Composed, dict[str, object]]:
    """The search's statement and parameters (public so that tests can EXPLAIN it)."""
    where = sql.SQL("AND ({})").format(spec.condition.sql) if spec.condition else sql.SQL("")
    values = {
        "project_id": sql.Literal(project_id),
        "namespace": sql.Literal(spec.namespace),
        "op": sql.SQL(spec.metric.value),
        "embedding": sql.SQL("embedding" if spec.include_embeddings else "NULL::vector"),
        "condition": where,
    }
    parts = [sql.SQL(Q["vector_search_exact"]).format(seq=sql.Literal(0), **values)]
    if _uses_index(namespace, spec) and not exact:
        seq = sql.Literal(namespace.index_seq)
        itype = hnsw_type(namespace.dim)
        ann = sql.SQL(Q["vector_search_ann"]).format(seq=seq, itype=itype, **values)
        parts = [ann, sql.SQL(Q["vector_search_exact"]).format(seq=seq, **values)]
    return _compose(parts), _params(spec)


def _compose(parts: list[sql.Composed]) -> sql.Composed:
    union = sql.SQL(" UNION ALL ").join(sql.SQL("({})").format(p) for p in parts)
    return sql.SQL(Q["vector_search"]).format(parts=union)


def _params(spec: Search) -> dict[str, object]:
    params: dict[str, object] = {"query": spec.query, "top_k": spec.top_k}
    if spec.condition:
        if clash := _RESERVED & spec.condition.params.keys():
            raise ValueError(f"condition parameters clash with the search's: {sorted(clash)}")
        params.update(spec.condition.params)
    return params


@dataclass(frozen=True)
class _Found:
    id: str
    distance: float
    metadata: dict[str, Any]
    document: str | None
    embedding: Any  # pgvector.Vector, or None
    create_time: datetime
    update_time: datetime

    def match(self, spec: Search) -> Match:
        embedding = self.embedding.to_numpy() if self.embedding is not None else None
        return Match(
            self.id, spec.metric.similarity(self.distance), self.distance, self.metadata,
            self.document, embedding, self.create_time, self.update_time,
        )  # fmt: skip


async def _run(
    conn: Conn, query: sql.Composed, params: dict[str, object], *, filtered: bool
) -> list[_Found]:
    # Unfiltered, the text repeats for every search of a namespace (its literals change only with
    # a new index): psycopg prepares it on the fifth run on a connection, which saves planning
    # it each time. A filter's values decide between the index and an exact scan, so a filtered
    # search is planned every time.
    cur = conn.cursor(binary=True, row_factory=class_row(_Found))
    await cur.execute(query, params, prepare=False if filtered else None)
    return await cur.fetchall()
