"""Background HNSW builds against a real PostgreSQL: recall above the threshold, plans that use
the partial index (and the btree below it), searches during a build, writes after it, failed and
abandoned builds, one builder at a time, and 3072-dimensional namespaces (halfvec)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from bench.vector_data import clustered, nearest, recall
from tests.plugins.vectors import backend_waits, columns, connect, until
from zerodb_batch.storage import vector_index, vectors
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.vector_index import IndexPolicy, build_pending
from zerodb_batch.storage.vector_search import (
    Condition,
    NamespaceCache,
    Search,
    namespace_info,
    search,
    statement,
)

P = "project-a"
POLICY = IndexPolicy(threshold=500, retry_seconds=0)
DATA = clustered(3000, 32, seed=3, clusters=30)
QUERIES = clustered(40, 32, seed=4, clusters=30)


async def write(conn: Conn, rows: vectors.VectorColumns, project_id: str = P) -> None:
    async with conn.transaction():
        await vectors.copy_insert(conn, project_id, rows)


async def found_ids(conn: Conn, query: np.ndarray, k: int = 10, **kwargs: Any) -> list[str]:
    return [m.id for m in await search(conn, P, Search("docs", query, k, **kwargs))]


async def namespace_row(conn: Conn, namespace: str = "docs") -> dict[str, Any]:
    cur = await conn.execute(
        "SELECT index_state, index_name, index_seq, build_failures, build_error"
        " FROM vector_namespaces WHERE project_id = %s AND namespace = %s",
        (P, namespace),
    )
    row = await cur.fetchone()
    assert row is not None
    return dict(zip(["state", "name", "seq", "failures", "error"], row, strict=True))


async def hnsw_indexes(conn: Conn) -> dict[str, tuple[bool, str]]:
    """Our HNSW indexes: name -> (valid, definition)."""
    cur = await conn.execute(
        "SELECT c.relname, i.indisvalid, pg_get_indexdef(c.oid) FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE 'vectors_hnsw_%%'"
    )
    return {r[0]: (r[1], r[2]) for r in await cur.fetchall()}  # type: ignore[misc]


async def plan(conn: Conn, spec: Search, *, generic: bool = False, exact_off: bool = False) -> str:
    """EXPLAIN of the search's own statement; `generic` prepares it and forces a generic plan,
    as a statement cached by a driver would get; `exact_off` discourages scanning and sorting,
    leaving an index that matches the statement as the planner's way out."""
    namespace = await namespace_info(conn, P, spec.namespace)
    assert namespace is not None
    query, params = statement(P, namespace, spec)
    async with conn.transaction():
        if generic:
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        if exact_off:
            await conn.execute("SET LOCAL enable_seqscan = off")
            await conn.execute("SET LOCAL enable_sort = off")
        explain = sql.SQL("EXPLAIN (COSTS OFF) {}").format(query)
        cur = await conn.execute(explain, params, prepare=generic)
        return "\n".join(r[0] for r in await cur.fetchall())  # type: ignore[misc]


@asynccontextmanager
async def writer_holding_the_table(url: str) -> AsyncIterator[None]:
    """A transaction that has written to the vectors table and stays open: CREATE INDEX
    CONCURRENTLY waits for it, which holds a build in progress for as long as the test wants."""
    async with await connect(url) as conn, conn.transaction():
        await vectors.upsert(conn, "someone-else", columns(clustered(1, 3)))
        yield


async def build_in_background(url: str, watcher: Conn, **policy: Any) -> asyncio.Task[list[str]]:
    """Start a builder pass; return once its CREATE INDEX is waiting for the blocking writer."""
    conn = await connect(url)

    async def run() -> list[str]:
        async with conn:
            return await build_pending(conn, IndexPolicy(**{**POLICY.__dict__, **policy}))

    task = asyncio.create_task(run())

    async def building() -> bool:
        cur = await watcher.execute(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'CREATE INDEX CONCURRENTLY%'"
        )
        row = await cur.fetchone()
        return row is not None and await backend_waits(watcher, int(row[0]))  # type: ignore[call-overload]

    await until(building, "the index build to wait for the writer")
    return task


def test_a_large_namespace_gets_an_index_with_recall_and_plans_that_use_it(
    vector_database: str,
) -> None:
    async def scenario() -> None:
        async with await connect(vector_database) as conn:
            await write(conn, columns(DATA))
            await write(conn, columns(DATA[:100], "small"))
            assert await build_pending(conn, POLICY) != []
            assert (await namespace_row(conn))["state"] == "ready"
            assert (await namespace_row(conn, "small"))["state"] == "none"
            found = [await found_ids(conn, q) for q in QUERIES]
            truth = [[f"v{n}" for n in row] for row in nearest(DATA, QUERIES, 10)]
            assert recall(found, truth) >= 0.9

            name = (await namespace_row(conn))["name"]
            for generic in (False, True):
                explained = await plan(conn, Search("docs", QUERIES[0]), generic=generic)
                assert f"Index Scan using {name}" in explained
            small = await plan(conn, Search("small", QUERIES[0]))
            # A btree on (project_id, namespace, ...): the primary key or vectors_written.
            assert "Index Cond: ((project_id = 'project-a'::text) AND (namespace = 'small'" in small
            assert "hnsw" not in small

    asyncio.run(scenario())


def test_writes_after_the_build_are_searched_exactly_and_trigger_a_rebuild(
    vector_database: str,
) -> None:
    async def scenario() -> None:
        async with await connect(vector_database) as conn:
            await write(conn, columns(DATA[:1000]))
            [first] = await build_pending(conn, POLICY)
            # Replacing rows and adding new ones: none of them enters the index...
            await write(conn, columns(DATA[1000:1399], prefix="new"))
            async with conn.transaction():
                await vectors.upsert(conn, P, columns(DATA[2000:2100]))  # replaces v0..v99
            assert await build_pending(conn, POLICY) == []  # 499 written since: below threshold
            now = np.concatenate([DATA[2000:2100], DATA[100:1000], DATA[1000:1399]])
            ids = [f"v{n}" for n in range(1000)] + [f"new{n}" for n in range(399)]
            found = [await found_ids(conn, q) for q in QUERIES]
            truth = [[ids[n] for n in row] for row in nearest(now, QUERIES, 10)]
            assert recall(found, truth) >= 0.9
            # ...and one more write makes 500 since the build: a new index replaces the old.
            await write(conn, columns(DATA[1399:1400], prefix="more"))
            stale = NamespaceCache(seconds=3600)
            await stale.get(conn, P, "docs")  # names the first index
            [second] = await build_pending(conn, POLICY)
            assert second != first
            assert set(await hnsw_indexes(conn)) == {second}
            assert (await namespace_row(conn))["name"] == second
            # A search that still believes in the dropped index finds the same neighbours.
            now = np.concatenate([now, DATA[1399:1400]])
            ids.append("more0")
            truth = [[ids[n] for n in row] for row in nearest(now, QUERIES, 10)]
            for cache in (stale, None):
                found = [
                    [m.id for m in await search(conn, P, Search("docs", q), namespaces=cache)]
                    for q in QUERIES
                ]
                assert recall(found, truth) >= 0.9

    asyncio.run(scenario())


def test_a_search_during_a_build_is_exact_and_the_build_becomes_ready(
    vector_database: str,
) -> None:
    async def scenario() -> None:
        async with await connect(vector_database) as conn:
            await write(conn, columns(DATA))
            async with writer_holding_the_table(vector_database):
                build = await build_in_background(vector_database, conn)
                assert (await namespace_row(conn))["state"] == "building"
                [(valid, _)] = (await hnsw_indexes(conn)).values()
                assert not valid
                truth = nearest(DATA, QUERIES[:5], 10)
                for query, expected in zip(QUERIES[:5], truth, strict=True):
                    assert await found_ids(conn, query) == [f"v{n}" for n in expected]
            assert len(await build) == 1
            assert (await namespace_row(conn))["state"] == "ready"

    asyncio.run(scenario())


@pytest.mark.parametrize("how", ["cancelled", "builder died"])
def test_a_failed_or_abandoned_build_is_cleaned_up_and_retried(
    vector_database: str, how: str
) -> None:
    async def scenario() -> None:
        async with await connect(vector_database) as conn:
            await write(conn, columns(DATA[:1000]))
            async with writer_holding_the_table(vector_database):
                build = await build_in_background(vector_database, conn, retry_seconds=3600)
                stop = "pg_cancel_backend" if how == "cancelled" else "pg_terminate_backend"
                await conn.execute(
                    sql.SQL(
                        "SELECT {}(pid) FROM pg_stat_activity"
                        " WHERE query LIKE 'CREATE INDEX CONCURRENTLY%'"
                    ).format(sql.Identifier(stop))
                )
                if how == "builder died":
                    with pytest.raises(psycopg.OperationalError):
                        await build
            # (Dropping the INVALID index waits for the writer, as any DROP INDEX CONCURRENTLY.)
            if how == "cancelled":
                assert await build == []
                row = await namespace_row(conn)
                assert (row["state"], row["failures"]) == ("none", 1)
                assert "cancel" in row["error"]
                assert await hnsw_indexes(conn) == {}  # the INVALID index was dropped
                # Not retried before its retry time...
                assert await build_pending(conn, POLICY) == []
                await conn.execute("UPDATE vector_namespaces SET retry_time = now()")
            else:
                assert (await namespace_row(conn))["state"] == "building"
                [(valid, _)] = (await hnsw_indexes(conn)).values()
                assert not valid
            # ...and then rebuilt, with whatever was left behind gone.
            [name] = await build_pending(conn, POLICY)
            assert set(await hnsw_indexes(conn)) == {name}
            assert (await namespace_row(conn))["state"] == "ready"

    asyncio.run(scenario())


def test_one_builder_at_a_time_across_processes(vector_database: str) -> None:
    async def scenario() -> None:
        async with await connect(vector_database) as conn:
            await write(conn, columns(DATA[:1000]))
            async with writer_holding_the_table(vector_database):
                build = await build_in_background(vector_database, conn)
                async with await connect(vector_database) as other:
                    assert await build_pending(other, POLICY) == []
            assert len(await build) == 1
            assert len(await hnsw_indexes(conn)) == 1

    asyncio.run(scenario())


def test_3072_dimensions_are_indexed_as_halfvec_and_searched(vector_database: str) -> None:
    data, queries = (
        clustered(1500, 3072, seed=5, clusters=10),
        clustered(10, 3072, seed=6, clusters=10),
    )

    async def scenario() -> None:
        async with await connect(vector_database) as conn:
            async with conn.transaction():
                await vectors.upsert(conn, P, columns(data))
            exact = [await found_ids(conn, q) for q in queries]
            truth = [[f"v{n}" for n in row] for row in nearest(data, queries, 10)]
            assert exact == truth
            [name] = await build_pending(conn, POLICY)
            [(valid, definition)] = (await hnsw_indexes(conn)).values()
            assert valid
            assert "(embedding)::halfvec(3072)) halfvec_cosine_ops" in definition
            # The planner underrates exact scans of big toasted vectors and may still prefer one
            # at this size (it takes the index at the default threshold, 10,000): discouraged
            # from it, it must find the index, i.e. the statement repeats the index's cast.
            explained = await plan(conn, Search("docs", queries[0]), exact_off=True)
            assert f"Index Scan using {name}" in explained
            assert recall([await found_ids(conn, q) for q in queries], truth) >= 0.9

    asyncio.run(scenario())


def test_a_filtered_search_on_an_index_still_returns_top_k(vector_database: str) -> None:
    """A filter that few rows pass: the iterative index scan keeps going, and when it gives up
    the search is answered exactly."""
    rare = {n for n in range(3000) if n % 100 == 7}  # 30 rows
    meta = [{"tag": "rare" if n in rare else "common"} for n in range(3000)]
    condition = Condition(sql.SQL("metadata @> %(f)s::jsonb"), {"f": json.dumps({"tag": "rare"})})

    async def scenario() -> None:
        async with await connect(vector_database) as conn:
            await write(conn, columns(DATA, metadata=meta))
            await build_pending(conn, POLICY)
            rows = np.array(sorted(rare))
            for query in QUERIES[:5]:
                for k in (10, 30, 50):
                    found = await found_ids(conn, query, k, condition=condition)
                    expected = rows[nearest(DATA[rows], query[None, :], min(k, 30))[0]]
                    assert len(found) == min(k, 30)
                    assert set(found) == {f"v{n}" for n in expected}

    asyncio.run(scenario())


def test_index_names_fit_postgres_identifiers() -> None:
    prefix = vector_index.index_prefix("p" * 200, "n" * 200)
    assert len(f"{prefix}{2**63 - 1}") <= 63


def test_a_namespace_being_loaded_waits_for_its_index_until_the_load_slows(
    vector_database: str,
) -> None:
    policy = IndexPolicy(threshold=500, busy_writes_per_second=1.0, quiet_seconds=3600)

    async def scenario() -> None:
        activity = vector_index.Activity()
        async with await connect(vector_database) as conn:
            await write(conn, columns(DATA[:1000]))
            assert await build_pending(conn, policy, activity) == []  # written just now
            await write(conn, columns(DATA[1000:2000], prefix="more"))
            assert await build_pending(conn, policy, activity) == []  # 1000 since the last pass
            assert (await namespace_row(conn))["state"] == "none"
            [name] = await build_pending(conn, policy, activity)  # no writes since: built
            assert (await namespace_row(conn))["name"] == name
            # Quiet for quiet_seconds counts too, seen for the first time or not.
            await write(conn, columns(DATA[2000:3000], prefix="again"))
            await conn.execute("UPDATE vector_namespaces SET update_time = now() - interval '2h'")
            assert len(await build_pending(conn, policy, vector_index.Activity())) == 1

    asyncio.run(scenario())


def test_the_builder_task_builds_after_wake_and_stops_when_cancelled(
    vector_database: str,
) -> None:
    policy = IndexPolicy(threshold=500, poll_seconds=3600, quiet_seconds=0)

    async def scenario() -> None:
        builder = vector_index.IndexBuilder(vector_database, policy)
        task = asyncio.create_task(builder.run())
        try:
            async with await connect(vector_database) as conn:
                await write(conn, columns(DATA[:1000]))
                builder.wake()

                async def ready() -> bool:
                    return (await namespace_row(conn))["state"] == "ready"

                await until(ready, "the builder to index the namespace")
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())


def test_the_builder_task_stops_when_cancelled_in_the_middle_of_a_build(
    vector_database: str,
) -> None:
    async def scenario() -> None:
        builder = vector_index.IndexBuilder(vector_database, replace(POLICY, quiet_seconds=0))
        async with await connect(vector_database) as conn:
            await write(conn, columns(DATA[:1000]))
            async with writer_holding_the_table(vector_database):
                task = asyncio.create_task(builder.run())

                async def building() -> bool:
                    return (await namespace_row(conn))["state"] == "building"

                await until(building, "the build to start")
                # Cancelled as its connection breaks: psycopg then raises a connection error
                # in place of the cancellation, which must not pass for a failure to retry.
                task.cancel()
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE query LIKE 'CREATE INDEX CONCURRENTLY%'"
                )
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
