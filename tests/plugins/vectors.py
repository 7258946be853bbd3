"""Fixtures for the vector storage tests: migrated databases and connections to them.

Index builds act on every namespace of a database, so a test that runs the builder gets a
database of its own (`vector_database`); the others share one (`shared_vector_database`) and
keep apart by project.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator

import numpy as np
import psycopg
import pytest

from bench.vector_data import Matrix
from tests.plugins.services import Backends, create_database, drop_database
from zerodb_batch.storage.migrate import migrate
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.vectors import VectorColumns


def _migrated(backends: Backends) -> str:
    url = create_database(backends.admin_url, "zerodb_vectors")

    async def apply() -> None:
        async with await connect(url) as conn:
            await migrate(conn)

    asyncio.run(apply())
    return url


@pytest.fixture(scope="session")
def shared_vector_database(backends: Backends) -> Iterator[str]:
    url = _migrated(backends)
    yield url
    drop_database(backends.admin_url, url)


@pytest.fixture
def vector_database(backends: Backends) -> Iterator[str]:
    url = _migrated(backends)
    yield url
    drop_database(backends.admin_url, url)


@pytest.fixture
def project_id() -> str:
    return f"p-{uuid.uuid4()}"


async def connect(url: str) -> Conn:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


def columns(
    vectors: Matrix,
    namespace: str = "docs",
    *,
    prefix: str = "v",
    metadata: list[dict[str, object]] | None = None,
) -> VectorColumns:
    """Rows `<prefix><n>` for the matrix's rows, with the given metadata (or `{"n": n}`)."""
    rows = VectorColumns()
    for n, embedding in enumerate(vectors):
        meta = metadata[n] if metadata else {"n": n}
        rows.add(n, f"{prefix}{n}", namespace, np.asarray(embedding, np.float32), json.dumps(meta))
    return rows


async def backend_waits(watcher: Conn, pid: int) -> bool:
    """Whether that backend is waiting for a lock (a row, a transaction, a virtual xid)."""
    cur = await watcher.execute(
        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def until(probe: Callable[[], Awaitable[bool]], what: str, seconds: float = 30) -> None:
    """Poll `probe` until it is true; fail (not a timing check) after about `seconds`."""
    for _ in range(int(seconds / 0.05)):
        if await probe():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {seconds} s waiting for {what}")
