"""Lock order on a database whose collation is not code-point order.

Every write of memories or vectors takes its rows' locks in code-point order of their ids
(Python's order, in which batches are validated and sliced), so writers sharing ids wait for
each other rather than deadlock. A plain `ORDER BY id` would follow the database's collation
instead, which agrees with code-point order only under C. The embedded PostgreSQL and the
machine's own run C.UTF-8, so these tests start a PostgreSQL of their own that can find
en_US.UTF-8 (compiled here with glibc's `localedef` into a directory named by LOCPATH), where
"a" sorts before "B" and by code point "B" comes first.

Each test holds row "a" in another session while the write runs: a write in code-point order
has locked "B" by the time it waits there; one in collation order waits with "B" still free.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from unittest import mock

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.plugins.checks import held_while_waiting
from tests.plugins.services import scratch_dir
from zerodb_batch.domain.memory import MemoryColumns
from zerodb_batch.domain.memory_update import UpdateColumns
from zerodb_batch.embedded import EmbeddedPostgres
from zerodb_batch.storage import memories, vectors
from zerodb_batch.storage.migrate import migrate
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.queries import Q
from zerodb_batch.storage.vectors import VectorColumns

PROJECT = "collated"
LOCALE = "en_US.UTF-8"


@pytest.fixture(scope="module")
def collated() -> Iterator[str]:
    """A migrated database collated en_US.UTF-8 (libc), on a PostgreSQL of its own."""
    with scratch_dir() as path:
        locales = path / "locales"
        locales.mkdir()
        made = subprocess.run(
            ["localedef", "-i", "en_US", "-f", "UTF-8", str(locales / LOCALE)],
            capture_output=True,
            text=True,
        )
        if made.returncode != 0:
            pytest.fail(
                f"localedef could not compile {LOCALE} (it needs glibc's locale sources, Debian's"
                f" `locales` package): {made.stderr.strip()}"
            )
        for made_path in [locales, *locales.rglob("*")]:  # read by the PostgreSQL system user
            made_path.chmod(0o755 if made_path.is_dir() else 0o644)
        postgres = EmbeddedPostgres(path / "data")
        with mock.patch.dict(os.environ, {"LOCPATH": str(locales)}):
            admin = postgres.start()  # the server keeps the environment it started with
        try:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(
                    sql.SQL(
                        "CREATE DATABASE collated TEMPLATE template0 LOCALE_PROVIDER libc LOCALE {}"
                    ).format(sql.Literal(LOCALE))
                )
            url = make_conninfo(admin, dbname="collated")

            async def apply() -> None:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await migrate(conn)

            asyncio.run(apply())
            yield url
        finally:
            postgres.stop()


@pytest.fixture
def memory_rows(collated: str) -> str:
    """Memories "a", "B" and "c" (made fresh), in the collated database."""
    with psycopg.connect(collated, autocommit=True) as conn:
        conn.execute("DELETE FROM memories WHERE project_id = %s", (PROJECT,))
        for memory_id in "aBc":
            conn.execute(
                "INSERT INTO memories (project_id, id, content, memory_type, importance)"
                " VALUES (%s, %s, '', 'semantic', 0.5)",
                (PROJECT, memory_id),
            )
    return collated


LOCK_MEMORY = "SELECT 1 FROM memories WHERE project_id = %s AND id = %s FOR UPDATE"


Write = Callable[[Conn], Awaitable[None]]


def memory_held(url: str, write: Write) -> list[bool]:
    """Whether `write` holds "B", and "c", while it waits on "a"."""
    probes = [(LOCK_MEMORY, (PROJECT, i)) for i in "Bc"]
    return asyncio.run(held_while_waiting(url, (LOCK_MEMORY, (PROJECT, "a")), write, probes))


def test_this_database_does_not_sort_by_code_point(collated: str) -> None:
    """Its collation puts "a" before "B"; COLLATE "C", as Python does, puts "B" first."""
    query = (
        'SELECT array_agg(x ORDER BY x), array_agg(x ORDER BY x COLLATE "C")'
        " FROM unnest(%s::text[]) AS x"
    )
    with psycopg.connect(collated) as conn:
        row = conn.execute(query, [list("aBc")]).fetchone()
    assert row == (["a", "B", "c"], sorted("aBc"))


def test_an_upsert_locks_in_code_point_order(memory_rows: str) -> None:
    rows = MemoryColumns()
    for n, memory_id in enumerate(sorted("aBc")):  # as a batch is sliced: code-point order
        rows.add(n, memory_id, "new", "semantic", 0.5, [], "{}", "", "", "")

    async def upsert(conn: Conn) -> None:
        await memories.upsert_sent(await memories.send_upsert(conn, PROJECT, rows))

    assert memory_held(memory_rows, upsert) == [True, False]


def test_an_update_locks_in_code_point_order(memory_rows: str) -> None:
    rows = UpdateColumns()
    for n, memory_id in enumerate("caB"):
        rows.add(n, memory_id, {"importance": 0.9})

    async def update(conn: Conn) -> None:
        assert await memories.missing(await memories.send_update(conn, PROJECT, rows)) == []

    assert memory_held(memory_rows, update) == [True, False]


def test_a_delete_locks_in_code_point_order(memory_rows: str) -> None:
    async def delete(conn: Conn) -> None:
        assert await memories.delete(conn, PROJECT, list("caB")) == {"a", "B", "c"}

    assert memory_held(memory_rows, delete) == [True, False]


def test_a_staged_chunk_locks_in_code_point_order(memory_rows: str) -> None:
    rows = memories.MemoryCopyRows(PROJECT)
    for n, memory_id in enumerate("caB"):
        rows.add(n, memory_id, "new", "semantic", 0.5, [], "{}", "", "", "")

    async def upsert(conn: Conn) -> None:
        assert await memories.copy_upsert(conn, rows) == (0, 3)

    assert memory_held(memory_rows, upsert) == [True, False]


@pytest.fixture
def namespaces(collated: str) -> str:
    """Namespaces "a", "B" and "c" of 2 dimensions, each with a vector, made fresh."""

    async def make() -> None:
        async with await psycopg.AsyncConnection.connect(collated, autocommit=True) as conn:
            await conn.execute("DELETE FROM vectors WHERE project_id = %s", (PROJECT,))
            await conn.execute("DELETE FROM vector_namespaces WHERE project_id = %s", (PROJECT,))
            async with conn.transaction():
                await vectors.upsert(conn, PROJECT, vector_rows("aBc", "first"))

    asyncio.run(make())
    return collated


def vector_rows(names: str, vector_id: str) -> VectorColumns:
    """A vector `vector_id` in each namespace of `names`, in (namespace, id) code-point order."""
    rows = VectorColumns()
    for n, namespace in enumerate(sorted(names)):
        rows.add(n, vector_id, namespace, np.ones(2, np.float32), json.dumps({}))
    return rows


LOCK_NAMESPACE = (
    "SELECT 1 FROM vector_namespaces WHERE project_id = %s AND namespace = %s FOR UPDATE"
)


def namespace_held(url: str, write: Write) -> list[bool]:
    """Whether `write` holds namespace row "B", and "c", while it waits on "a"."""
    probes = [(LOCK_NAMESPACE, (PROJECT, n)) for n in "Bc"]
    hold = (LOCK_NAMESPACE, (PROJECT, "a"))
    return asyncio.run(held_while_waiting(url, hold, write, probes))


def test_a_vector_batch_counts_its_namespaces_in_code_point_order(namespaces: str) -> None:
    async def upsert(conn: Conn) -> None:
        await vectors.upsert(conn, PROJECT, vector_rows("aB", "second"))

    assert namespace_held(namespaces, upsert) == [True, False]


def test_a_vector_chunk_counts_its_namespaces_in_code_point_order(namespaces: str) -> None:
    async def copy(conn: Conn) -> None:
        await vectors.copy_insert(conn, PROJECT, vector_rows("aB", "second"))

    assert namespace_held(namespaces, copy) == [True, False]


def test_new_namespaces_are_claimed_in_code_point_order(collated: str) -> None:
    """Writers making the same namespaces wait on each other's new rows in one order. Here
    another session has made namespace "a" and not committed: the write has made "B" by the
    time it waits there."""
    project = PROJECT + "-claim"
    with psycopg.connect(collated, autocommit=True) as conn:  # made fresh
        conn.execute("DELETE FROM vectors WHERE project_id = %s", (project,))
        conn.execute("DELETE FROM vector_namespaces WHERE project_id = %s", (project,))
    insert = (
        "INSERT INTO vector_namespaces (project_id, namespace, dim) VALUES (%s, %s, 2)"
        " ON CONFLICT DO NOTHING"
    )

    async def claim(conn: Conn) -> None:
        await vectors.upsert(conn, project, vector_rows("aB", "v"))

    hold, probe = (insert, (project, "a")), (insert, (project, "B"))
    assert asyncio.run(held_while_waiting(collated, hold, claim, [probe])) == [True]


@pytest.fixture
def vectors_aBc(collated: str) -> str:
    """Vectors "a", "B" and "c" of namespace "docs" (made fresh), in the collated database."""

    async def make() -> None:
        async with await psycopg.AsyncConnection.connect(collated, autocommit=True) as conn:
            await conn.execute("DELETE FROM vectors WHERE project_id = %s", (PROJECT,))
            rows = VectorColumns()
            for n, vector_id in enumerate(sorted("aBc")):
                rows.add(n, vector_id, "docs", np.ones(2, np.float32), "{}")
            async with conn.transaction():
                await vectors.upsert(conn, PROJECT, rows)

    asyncio.run(make())
    return collated


LOCK_VECTOR = "SELECT 1 FROM vectors WHERE project_id = %s AND id = %s FOR UPDATE"


def vector_held(url: str, write: Write) -> list[bool]:
    """Whether `write` holds vector "B", and "c", while it waits on "a"."""
    probes = [(LOCK_VECTOR, (PROJECT, i)) for i in "Bc"]
    return asyncio.run(held_while_waiting(url, (LOCK_VECTOR, (PROJECT, "a")), write, probes))


def test_a_vector_delete_locks_in_code_point_order(vectors_aBc: str) -> None:
    async def delete(conn: Conn) -> None:
        assert await vectors.delete(conn, PROJECT, "docs", list("caB")) == {"a", "B", "c"}

    assert vector_held(vectors_aBc, delete) == [True, False]


def test_a_staged_vector_chunk_locks_in_code_point_order(vectors_aBc: str) -> None:
    chunk = VectorColumns()  # in the order a client sent it
    for n, vector_id in enumerate("caB"):
        chunk.add(n, vector_id, "docs", np.ones(2, np.float32), "{}")

    async def upsert(conn: Conn) -> None:
        assert await vectors.copy_upsert(conn, PROJECT, chunk) == (0, 3)

    assert vector_held(vectors_aBc, upsert) == [True, False]


def test_stuck_builds_are_reset_in_code_point_order(collated: str) -> None:
    """The index builder's recovery locks namespaces' rows as writes count on them. The rows are
    made "a", "B", "c" (a table scan meets them in that collation order), all left building."""
    project = PROJECT + "-stuck"

    async def make() -> None:
        async with await psycopg.AsyncConnection.connect(collated, autocommit=True) as conn:
            await conn.execute("DELETE FROM vectors WHERE project_id = %s", (project,))
            await conn.execute("DELETE FROM vector_namespaces WHERE project_id = %s", (project,))
            for namespace in "aBc":
                async with conn.transaction():
                    await vectors.upsert(conn, project, vector_rows(namespace, "v"))
            await conn.execute(
                "UPDATE vector_namespaces SET index_state = 'building' WHERE project_id = %s",
                (project,),
            )

    async def unstick(conn: Conn) -> None:
        await conn.execute(Q["vector_index_unstick"])

    asyncio.run(make())
    probes = [(LOCK_NAMESPACE, (project, n)) for n in "Bc"]
    hold = (LOCK_NAMESPACE, (project, "a"))
    assert asyncio.run(held_while_waiting(collated, hold, unstick, probes)) == [True, False]
    with psycopg.connect(collated) as conn:  # back to exact search: none had an index
        states = conn.execute(
            "SELECT namespace, index_state FROM vector_namespaces WHERE project_id = %s"
            ' ORDER BY namespace COLLATE "C"',
            (project,),
        ).fetchall()
    assert states == [("B", "none"), ("a", "none"), ("c", "none")]
