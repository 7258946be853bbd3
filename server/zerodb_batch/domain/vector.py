"""Vectors: their rules, declared once, and the checks of the vector requests.

A vector's id is unique within its namespace, so duplicates in a batch are found by (namespace,
id); a vector that leaves its namespace empty takes the request's (`default` when that is empty
too), filled in before validation so that the two spellings of one namespace are one key. The
live API's `vector_id` and `vector_metadata` are aliases of `id` and `metadata`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from zerodb_batch import limits
from zerodb_batch.domain.records import positions_by
from zerodb_batch.domain.rules import Body, Embedding, JsonObject, Rules, Text, check_embedding
from zerodb_batch.domain.struct_json import to_dict
from zerodb_batch.domain.table_filter import Filter, read_filter
from zerodb_batch.domain.validate import Checker

VECTOR = Rules(
    "Vector",
    Text("id", limits.MAX_ID_CHARS, alias="vector_id"),
    Text("namespace", limits.MAX_NAMESPACE_CHARS),
    Embedding("vector_embedding", limits.MAX_VECTOR_DIM),
    JsonObject("metadata", limits.MAX_METADATA_BYTES, alias="vector_metadata"),
    Body("document", limits.MAX_DOCUMENT_BYTES),
    keyed=True,
    scope="namespace",
)


def request_namespace(namespace: str, field: str = "namespace") -> str:
    """A request's namespace, checked; `default` when empty."""
    c = Checker("")
    c.text(field, namespace, limits.MAX_NAMESPACE_CHARS)
    c.raise_if_any("the namespace is invalid")
    return namespace or limits.DEFAULT_VECTOR_NAMESPACE


def fill_namespaces(vectors: Iterable[Any], namespace: str) -> None:
    """Give every vector without a namespace the request's."""
    for vector in vectors:
        if not vector.namespace:
            vector.namespace = namespace


def write_order(vectors: Any) -> list[int]:
    """The vectors' positions by (namespace, id): concurrent batches that share ids then lock
    their rows in the same order and never deadlock (see memory_upsert)."""
    return positions_by([(v.namespace, v.id or v.vector_id) for v in vectors])


@dataclass(frozen=True)
class SearchQuery:
    """A SearchVectors request, checked (the metadata filter is compiled by storage)."""

    namespace: str
    query: npt.NDArray[np.float32]
    top_k: int
    min_similarity: float | None
    filter: Filter


def parse_search(request: Any) -> SearchQuery:
    """Everything of a search but its filter; INVALID_ARGUMENT naming every bad field."""
    c = Checker("")
    c.text("namespace", request.namespace, limits.MAX_NAMESPACE_CHARS)
    query = check_embedding(c, "query_vector", request.query_vector, limits.MAX_VECTOR_DIM)
    if request.top_k:
        if not 1 <= request.top_k <= limits.MAX_TOP_K:
            c.add("top_k", f"must be 1 to {limits.MAX_TOP_K}, got {request.top_k}", "OUT_OF_RANGE")
        top_k = request.top_k
    else:
        if not 0 <= request.limit <= limits.MAX_SEARCH_LIMIT:
            c.add(
                "limit",
                f"must be 1 to {limits.MAX_SEARCH_LIMIT} (or use top_k), got {request.limit}",
                "OUT_OF_RANGE",
            )
        top_k = request.limit or limits.DEFAULT_TOP_K
    threshold = request.threshold if request.HasField("threshold") else None
    if threshold is not None and not np.isfinite(threshold):
        c.add("threshold", f"must be a finite number, got {threshold}", "NOT_FINITE")
    tree = read_filter(c, "metadata_filter", to_dict(request.metadata_filter))
    c.raise_if_any("the search is invalid")
    namespace = request.namespace or limits.DEFAULT_VECTOR_NAMESPACE
    return SearchQuery(namespace, query, top_k, threshold, tree)
