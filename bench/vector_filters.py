"""Filtered searches on an indexed namespace: what pgvector 0.8 offers, side by side.

For a metadata equality that 10%, 1% and 0.1% of the namespace pass, top_k 10:
  ours:            the search as served: iterative index scan (relaxed order), and an exact
                   search when the scan gives up before top_k rows pass (hnsw.max_scan_tuples)
  hnsw, no iter.:  the index scan as before pgvector 0.8: ef_search candidates, then the filter
  hnsw, strict:    iterative scan in strict order
  exact:           the btree and the filter on every row of the namespace
recall@10 is against the exact filtered neighbours by numpy; "full" is the share of queries that
got all 10 results.
"""

from __future__ import annotations

import json
import time

import numpy as np
from psycopg import sql

from bench.vector_data import Matrix, nearest, recall
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.vector_search import (
    Condition,
    Search,
    Tuning,
    namespace_info,
    search,
    statement,
)

K = 10
SETTINGS = (
    "SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', %s, true),"
    " set_config('hnsw.max_scan_tuples', %s, true)"
)


async def compare_filters(
    conn: Conn, project: str, namespace: str, data: Matrix, queries: Matrix
) -> list[str]:
    lines = [f"  {'filter':<10} {'path':<16} {'q/s':>7} {'recall':>7} {'full':>6}"]
    for key, share in (("b10", "10%"), ("b100", "1%"), ("b1000", "0.1%")):
        rows = np.arange(0, len(data), int(key[1:]))  # the rows whose metadata[key] is 0
        truth = [[f"v{rows[i]}" for i in r] for r in nearest(data[rows], queries, K)]
        condition = Condition(sql.SQL("metadata @> %(f)s::jsonb"), {"f": json.dumps({key: 0})})
        for path in ("ours", "hnsw, no iter.", "hnsw, strict", "exact"):
            qps, found = await _measure(conn, project, namespace, queries, condition, path)
            full = sum(len(f) == K for f in found) / len(found)
            score = recall(found, truth)
            lines.append(f"  {share:<10} {path:<16} {qps:>7.0f} {score:>7.3f} {full:>6.2f}")
    return lines


async def _measure(
    conn: Conn, project: str, namespace: str, queries: Matrix, condition: Condition, path: str
) -> tuple[float, list[list[str]]]:
    start = time.perf_counter()
    found = [await _ask(conn, project, namespace, q, condition, path) for q in queries]
    return len(queries) / (time.perf_counter() - start), found


async def _ask(
    conn: Conn, project: str, namespace: str, q: np.ndarray, condition: Condition, path: str
) -> list[str]:
    spec = Search(namespace, q, K, condition=condition)
    if path == "ours":
        return [m.id for m in await search(conn, project, spec)]
    info = await namespace_info(conn, project, namespace)
    assert info is not None
    iterative = {"hnsw, no iter.": "off", "hnsw, strict": "strict_order"}.get(path, "off")
    query, params = statement(project, info, spec, exact=path == "exact")
    async with conn.transaction():
        await conn.execute(SETTINGS, (str(Tuning().ef_search), iterative, "20000"))
        cur = await conn.execute(query, params, prepare=False)
        return [str(r[0]) for r in await cur.fetchall()]
