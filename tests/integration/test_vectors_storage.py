"""The vectors table against a real PostgreSQL with pgvector: dimensions per namespace, upserts,
COPY chunks, reads, deletes, namespace listing, and isolation of namespaces and projects."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

import numpy as np
import pytest

from bench.vector_data import clustered
from tests.plugins import checks
from tests.plugins.vectors import backend_waits, columns, connect, until
from zerodb_batch.errors import DimensionMismatch
from zerodb_batch.storage import vectors
from zerodb_batch.storage.loads import IdExists
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.vectors import VectorColumns


def test_the_first_vector_fixes_the_dimension_and_others_are_refused_with_paths(
    shared_vector_database: str, project_id: str
) -> None:
    async def scenario() -> None:
        async with await connect(shared_vector_database) as conn:
            async with conn.transaction():
                await vectors.upsert(conn, project_id, columns(clustered(3, 4)))
            mixed = columns(clustered(4, 4), prefix="w")
            mixed.embeddings[1] = np.ones(6, np.float32)
            mixed.embeddings[3] = np.ones(3, np.float32)
            with pytest.raises(DimensionMismatch) as caught:
                async with conn.transaction():
                    await vectors.upsert(conn, project_id, mixed)
            assert [v.field for v in caught.value.violations] == [
                "vectors[1].vector_embedding",
                "vectors[3].vector_embedding",
            ]
            assert caught.value.metadata == {"namespace": "docs", "expected": "4", "actual": "6"}
            assert set(await vectors.get(conn, project_id, "docs", mixed.ids)) == set()

    asyncio.run(scenario())


def test_a_batch_fixes_a_new_namespace_by_its_first_vector(
    shared_vector_database: str, project_id: str
) -> None:
    async def scenario() -> None:
        rows = columns(clustered(3, 8))
        rows.embeddings[2] = np.ones(5, np.float32)
        async with await connect(shared_vector_database) as conn:
            with pytest.raises(DimensionMismatch) as caught:
                async with conn.transaction():
                    await vectors.upsert(conn, project_id, rows)
            assert [v.field for v in caught.value.violations] == ["vectors[2].vector_embedding"]
            # Rolled back with the batch: the namespace is not fixed yet.
            assert await vectors.list_namespaces(conn, project_id, "", 10) == []

    asyncio.run(scenario())


@pytest.mark.parametrize("first_commits", [True, False])
def test_concurrent_first_writers_of_a_namespace_agree_on_its_dimension(
    shared_vector_database: str, project_id: str, first_commits: bool
) -> None:
    """The second writer waits for the first one's namespace row: it sees the committed
    dimension (and is refused), or, if the first rolled back, fixes its own."""

    async def scenario() -> None:
        async with (
            await connect(shared_vector_database) as first,
            await connect(shared_vector_database) as second,
            await connect(shared_vector_database) as watcher,
        ):
            tx = first.transaction()
            await tx.__aenter__()
            await vectors.upsert(first, project_id, columns(clustered(2, 4)))

            async def write_second() -> dict[tuple[str, str], bool]:
                async with second.transaction():
                    return await vectors.upsert(
                        second, project_id, columns(clustered(2, 6), prefix="s")
                    )

            racing = asyncio.create_task(write_second())
            pid = second.info.backend_pid
            await until(lambda: backend_waits(watcher, pid), "the second writer to wait")
            if first_commits:
                await tx.__aexit__(None, None, None)
                with pytest.raises(DimensionMismatch):
                    await racing
                expected = 4
            else:
                await tx.__aexit__(RuntimeError, RuntimeError("abandon"), None)
                assert await racing == {("docs", "s0"): True, ("docs", "s1"): True}
                expected = 6
            [namespace] = await vectors.list_namespaces(watcher, project_id, "", 10)
            assert (namespace.dim, namespace.vector_count) == (expected, 2)

    asyncio.run(scenario())


def test_upsert_replaces_the_vector_metadata_and_document(
    shared_vector_database: str, project_id: str
) -> None:
    async def scenario() -> None:
        old, new = clustered(2, 8, seed=1), clustered(2, 8, seed=2)
        async with await connect(shared_vector_database) as conn:
            first = columns(old)
            first.documents[0] = "the first text"
            async with conn.transaction():
                assert await vectors.upsert(conn, project_id, first) == {
                    ("docs", "v0"): True,
                    ("docs", "v1"): True,
                }
            before = await vectors.get(conn, project_id, "docs", ["v0"])
            second = columns(new[:1], metadata=[{"kind": "replaced"}])
            second.add(1, "v9", "docs", new[1])
            async with conn.transaction():
                assert await vectors.upsert(conn, project_id, second) == {
                    ("docs", "v0"): False,
                    ("docs", "v9"): True,
                }
            after = await vectors.get(conn, project_id, "docs", ["v0", "v1", "v9"])
            assert np.allclose(after["v0"].embedding, new[0])
            assert after["v0"].metadata == {"kind": "replaced"}
            assert after["v0"].document is None
            assert after["v0"].create_time == before["v0"].create_time
            assert after["v0"].update_time > before["v0"].update_time
            assert np.allclose(after["v1"].embedding, old[1])
            [namespace] = await vectors.list_namespaces(conn, project_id, "", 10)
            assert namespace.vector_count == 3

    asyncio.run(scenario())


def test_copy_insert_takes_new_ids_and_refuses_existing_ones(
    shared_vector_database: str, project_id: str
) -> None:
    async def scenario() -> None:
        data = clustered(300, 16)
        async with await connect(shared_vector_database) as conn:
            async with conn.transaction():
                await vectors.copy_insert(conn, project_id, columns(data[:200]))
            with pytest.raises(IdExists):
                async with conn.transaction():
                    await vectors.copy_insert(conn, project_id, columns(data[150:]))
            async with conn.transaction():
                rest = columns(data[:300])  # ids v0..v299: 200 exist, 100 are new
                assert await vectors.copy_upsert(conn, project_id, rest) == (100, 200)
            [namespace] = await vectors.list_namespaces(conn, project_id, "", 10)
            assert (namespace.dim, namespace.vector_count) == (16, 300)
            stored = await vectors.get(conn, project_id, "docs", ["v0", "v299"])
            assert np.allclose(stored["v299"].embedding, data[299])
            assert stored["v0"].metadata == {"n": 0}

    asyncio.run(scenario())


def test_copy_refuses_a_vector_of_another_dimension(
    shared_vector_database: str, project_id: str
) -> None:
    async def scenario() -> None:
        async with await connect(shared_vector_database) as conn:
            async with conn.transaction():
                await vectors.copy_insert(conn, project_id, columns(clustered(2, 4)))
            for write in (vectors.copy_insert, vectors.copy_upsert):
                with pytest.raises(DimensionMismatch):
                    async with conn.transaction():
                        await write(conn, project_id, columns(clustered(2, 5), prefix="x"))

    asyncio.run(scenario())


def test_delete_reports_the_ids_that_existed_and_counts_follow(
    shared_vector_database: str, project_id: str
) -> None:
    async def scenario() -> None:
        async with await connect(shared_vector_database) as conn:
            async with conn.transaction():
                await vectors.upsert(conn, project_id, columns(clustered(5, 4)))
            async with conn.transaction():
                gone = await vectors.delete(conn, project_id, "docs", ["v1", "v3", "nope"])
            assert gone == {"v1", "v3"}
            assert await vectors.delete(conn, project_id, "docs", ["v1"]) == set()
            assert set(await vectors.get(conn, project_id, "docs", ["v0", "v1", "v4"])) == {
                "v0",
                "v4",
            }
            [namespace] = await vectors.list_namespaces(conn, project_id, "", 10)
            assert namespace.vector_count == 3
            # 5 written, 2 deleted: what the index builder weighs against the namespace's index.
            cur = await conn.execute(
                "SELECT write_count FROM vector_namespaces WHERE project_id = %s", (project_id,)
            )
            assert await cur.fetchone() == (7,)

    asyncio.run(scenario())


def test_namespaces_list_in_keyset_pages_with_dimension_count_and_index_state(
    shared_vector_database: str, project_id: str
) -> None:
    async def scenario() -> None:
        rows = VectorColumns()
        for n, name in enumerate(["b", "a", "d", "c", "e"]):
            for k in range(n + 1):
                rows.add(len(rows), f"id{k}", name, np.ones(n + 2, np.float32))
        async with await connect(shared_vector_database) as conn:
            async with conn.transaction():
                await vectors.upsert(conn, project_id, rows)
            first = await vectors.list_namespaces(conn, project_id, "", 2)
            rest = await vectors.list_namespaces(conn, project_id, first[-1].namespace, 10)
            listed = [(n.namespace, n.dim, n.vector_count, n.index_state) for n in first + rest]
            assert listed == [
                ("a", 3, 2, "none"),
                ("b", 2, 1, "none"),
                ("c", 5, 4, "none"),
                ("d", 4, 3, "none"),
                ("e", 6, 5, "none"),
            ]

    asyncio.run(scenario())


def test_namespaces_and_projects_isolate(shared_vector_database: str, project_id: str) -> None:
    other_project = f"{project_id}-other"

    async def scenario() -> None:
        async with await connect(shared_vector_database) as conn:
            async with conn.transaction():
                await vectors.upsert(conn, project_id, columns(clustered(2, 4), "docs"))
                # The same ids, other dimensions: each namespace and project has its own.
                await vectors.upsert(conn, project_id, columns(clustered(2, 6), "notes"))
                await vectors.upsert(conn, other_project, columns(clustered(2, 8), "docs"))
            mine = await vectors.get(conn, project_id, "docs", ["v0"])
            assert len(mine["v0"].embedding) == 4
            async with conn.transaction():
                assert await vectors.delete(conn, other_project, "docs", ["v0"]) == {"v0"}
            assert set(await vectors.get(conn, project_id, "docs", ["v0"])) == {"v0"}
            assert set(await vectors.get(conn, project_id, "notes", ["v0"])) == {"v0"}
            names = [n.namespace for n in await vectors.list_namespaces(conn, project_id, "", 9)]
            assert names == ["docs", "notes"]

    asyncio.run(scenario())


async def held_while_waiting_on_b(
    url: str, project_id: str, write: Callable[[Conn], Awaitable[object]]
) -> list[bool]:
    """Vectors c, a and b made in that order (so a scan of the table meets them so); while
    `write` waits on b, held by another session: whether it holds a, and c. A write that locks
    in (namespace, id) code-point order holds a and not yet c."""
    data = clustered(3, 2)
    async with await connect(url) as conn:
        for n, vid in enumerate("cab"):
            existing = VectorColumns()
            existing.add(n, vid, "docs", data[n], "{}")
            async with conn.transaction():
                await vectors.upsert(conn, project_id, existing)
    lock_row = "SELECT 1 FROM vectors WHERE project_id = %s AND id = %s FOR UPDATE"
    probes = [(lock_row, (project_id, vid)) for vid in "ac"]
    return await checks.held_while_waiting(url, (lock_row, (project_id, "b")), write, probes)


def test_a_staged_chunk_locks_its_rows_in_code_point_order(
    shared_vector_database: str, project_id: str
) -> None:
    """A streamed chunk's upsert takes its rows' locks in (namespace, id) code-point order, as a
    batch does (write_order), whatever order its staging table holds them in: writers sharing
    ids wait for each other instead of deadlocking."""
    chunk, data = VectorColumns(), clustered(3, 2)
    for n, vid in enumerate("cab"):
        chunk.add(n, vid, "docs", data[n], '{"v": 2}')
    write = partial(vectors.copy_upsert, project_id=project_id, rows=chunk)
    assert asyncio.run(held_while_waiting_on_b(shared_vector_database, project_id, write)) == [
        True,
        False,
    ]


def test_a_delete_locks_its_rows_in_code_point_order_whatever_its_plan(
    shared_vector_database: str, project_id: str
) -> None:
    """A delete over several ids locks them in code-point order before deleting, even when its
    plan visits the rows in table order (a bitmap scan, forced here)."""

    async def delete(conn: Conn) -> None:
        await conn.execute("SET LOCAL enable_indexscan = off")
        await conn.execute("SET LOCAL enable_seqscan = off")
        assert await vectors.delete(conn, project_id, "docs", ["a", "b", "c"]) == {"a", "b", "c"}

    assert asyncio.run(held_while_waiting_on_b(shared_vector_database, project_id, delete)) == [
        True,
        False,
    ]


def test_a_batch_of_several_statements_locks_its_namespace_after_all_its_vectors(
    shared_vector_database: str, project_id: str
) -> None:
    """A batch larger than one statement (UPSERT_SLICE vectors) takes its vectors' locks
    before its namespace's row, as a single write does; had its first statement locked the
    namespace, a single write holding a vector of its second statement and counting on that
    namespace would deadlock with it. Seen from outside: while the second statement waits on a
    vector held by another session, the namespace's row is free."""
    size = vectors.UPSERT_SLICE + 1
    last = f"v{size - 1:05d}"
    data = clustered(1, 2)[0]

    async def scenario() -> list[bool]:
        async with await connect(shared_vector_database) as conn:
            existing = VectorColumns()
            existing.add(0, last, "docs", data, "{}")
            async with conn.transaction():
                await vectors.upsert(conn, project_id, existing)
        batch = VectorColumns()
        for i in range(size):
            batch.add(i, f"v{i:05d}", "docs", data, "{}")
        lock_vector = "SELECT 1 FROM vectors WHERE project_id = %s AND id = %s FOR UPDATE"
        lock_namespace = (
            "SELECT 1 FROM vector_namespaces WHERE project_id = %s AND namespace = 'docs'"
            " FOR UPDATE"
        )

        async def write(conn: Conn) -> None:
            await vectors.write_batch(conn, project_id, batch, partial=False)

        return await checks.held_while_waiting(
            shared_vector_database,
            (lock_vector, (project_id, last)),
            write,
            [(lock_namespace, (project_id,))],
        )

    assert asyncio.run(scenario()) == [False]
