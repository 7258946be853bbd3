"""Exact search of small namespaces against numpy: every metric, top_k, minimum similarity, the
metadata filter seam, and the refusals."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from psycopg import sql

from bench.vector_data import clustered, nearest
from tests.plugins.vectors import columns, connect
from zerodb_batch.errors import InvalidArgument
from zerodb_batch.storage import vectors
from zerodb_batch.storage.vector_search import Condition, Metric, Search, search

# Not unit vectors, so that the three metrics rank differently.
DATA = clustered(400, 24, seed=7) * np.random.default_rng(7).uniform(0.5, 2, (400, 1)).astype(
    np.float32
)
QUERIES = clustered(5, 24, seed=8)


def store(url: str, project_id: str, **kwargs: object) -> None:
    async def write() -> None:
        async with await connect(url) as conn, conn.transaction():
            await vectors.upsert(conn, project_id, columns(DATA, **kwargs))  # type: ignore[arg-type]

    asyncio.run(write())


def run_search(url: str, project_id: str, spec: Search) -> list[tuple[str, float]]:
    async def go() -> list[tuple[str, float]]:
        async with await connect(url) as conn:
            return [(m.id, m.similarity) for m in await search(conn, project_id, spec)]

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("metric", "name"),
    [(Metric.COSINE, "cosine"), (Metric.L2, "l2"), (Metric.INNER_PRODUCT, "ip")],
)
def test_search_returns_the_true_nearest_neighbours(
    shared_vector_database: str, project_id: str, metric: Metric, name: str
) -> None:
    store(shared_vector_database, project_id)
    truth = nearest(DATA, QUERIES, 10, name)
    for query, expected in zip(QUERIES, truth, strict=True):
        found = run_search(shared_vector_database, project_id, Search("docs", query, 10, metric))
        assert [i for i, _ in found] == [f"v{n}" for n in expected]
        best = DATA[expected[0]]
        similarity = {
            "cosine": best @ query / np.linalg.norm(best) / np.linalg.norm(query),
            "l2": -np.linalg.norm(best - query),
            "ip": best @ query,
        }[name]
        assert found[0][1] == pytest.approx(similarity, abs=1e-4)


def test_top_k_min_similarity_and_embeddings(shared_vector_database: str, project_id: str) -> None:
    store(shared_vector_database, project_id)
    query = QUERIES[0]
    everything = run_search(shared_vector_database, project_id, Search("docs", query, 1000))
    assert len(everything) == 400
    similarities = [s for _, s in everything]
    assert similarities == sorted(similarities, reverse=True)
    cut = similarities[25]
    above = run_search(
        shared_vector_database, project_id, Search("docs", query, 100, min_similarity=cut)
    )
    assert above == everything[:26]

    async def with_embeddings() -> None:
        async with await connect(shared_vector_database) as conn:
            [match] = await search(
                conn, project_id, Search("docs", query, 1, include_embeddings=True)
            )
            [plain] = await search(conn, project_id, Search("docs", query, 1))
        assert match.embedding is not None
        assert np.allclose(match.embedding, DATA[int(match.id[1:])])
        assert plain.embedding is None

    asyncio.run(with_embeddings())


def test_a_metadata_condition_restricts_the_search(
    shared_vector_database: str, project_id: str
) -> None:
    """The seam the table filter compiler plugs into: a condition on `metadata` with params."""
    store(shared_vector_database, project_id, metadata=[{"shard": n % 4} for n in range(400)])
    condition = Condition(
        sql.SQL("{} @> {}").format(sql.Identifier("metadata"), sql.Placeholder("f0")),
        {"f0": json.dumps({"shard": 1})},
    )
    rows = np.arange(1, 400, 4)
    for query in QUERIES:
        found = run_search(
            shared_vector_database, project_id, Search("docs", query, 10, condition=condition)
        )
        expected = rows[nearest(DATA[rows], query[None, :], 10)[0]]
        assert [i for i, _ in found] == [f"v{n}" for n in expected]


def test_a_query_of_another_dimension_is_refused_and_unknown_namespaces_are_empty(
    shared_vector_database: str, project_id: str
) -> None:
    store(shared_vector_database, project_id)
    with pytest.raises(InvalidArgument) as caught:
        run_search(shared_vector_database, project_id, Search("docs", np.ones(3, np.float32)))
    assert caught.value.reason == "DIMENSION_MISMATCH"
    assert caught.value.violations[0].field == "query_vector"
    assert run_search(shared_vector_database, project_id, Search("nothing", QUERIES[0])) == []
    assert run_search(shared_vector_database, f"{project_id}-x", Search("docs", QUERIES[0])) == []


def test_searches_set_their_hnsw_settings_on_the_session_and_survive_a_rollback(
    shared_vector_database: str, project_id: str
) -> None:
    """Settings are the session's (no transaction per search) and each search gets its own:
    ef_search follows top_k above 100; one undone by a rollback is set again."""
    store(shared_vector_database, project_id)

    async def scenario() -> None:
        async with await connect(shared_vector_database) as conn:

            async def ef_search() -> str:
                cur = await conn.execute("SELECT current_setting('hnsw.ef_search')")
                return str((await cur.fetchone() or ("",))[0])

            await search(conn, project_id, Search("docs", QUERIES[0], 10))
            assert await ef_search() == "100"
            cur = await conn.execute("SELECT current_setting('hnsw.iterative_scan')")
            assert await cur.fetchone() == ("relaxed_order",)
            await search(conn, project_id, Search("docs", QUERIES[0], 300))
            assert await ef_search() == "300"
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await search(conn, project_id, Search("docs", QUERIES[0], 10))
                    raise RuntimeError("roll back")
            assert await ef_search() == "300"
            await search(conn, project_id, Search("docs", QUERIES[0], 10))
            assert await ef_search() == "100"

    asyncio.run(scenario())
