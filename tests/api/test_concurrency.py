"""Concurrent writes over overlapping rows: locks taken in id order (no deadlocks), and the
conflicts PostgreSQL does report are ABORTED with their reason, not UNAVAILABLE."""

from __future__ import annotations

import asyncio
import random
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.plugins.server import Project
from zerodb.v1 import memory_pb2, memory_pb2_grpc
from zerodb_batch.errors import Aborted
from zerodb_batch.storage.pool import translate_errors

CLIENTS, CALLS, RECORDS, IDS = 16, 20, 100, 300


def deadlocks(db: psycopg.Connection[tuple[object, ...]]) -> int:
    row = db.execute(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


def test_overlapping_upserts_in_any_order_never_deadlock(
    memories: memory_pb2_grpc.MemoryServiceStub,
    project: Project,
    db: psycopg.Connection[tuple[object, ...]],
) -> None:
    ids = [f"shared-{i}" for i in range(IDS)]

    def client(seed: int) -> int:
        rng = random.Random(seed)
        for call in range(CALLS):
            chosen = rng.sample(ids, RECORDS)  # overlapping sets, each in its own order
            request = memory_pb2.BatchUpsertMemoriesRequest(
                project_id=project.id,
                records=[{"id": i, "content": f"{seed}/{call}"} for i in chosen],
            )
            memories.BatchUpsertMemories(request, metadata=project.auth, timeout=120)
        return CALLS

    before = deadlocks(db)
    with ThreadPoolExecutor(CLIENTS) as pool:
        assert sum(pool.map(client, range(CLIENTS))) == CLIENTS * CALLS
    assert deadlocks(db) - before == 0
    stored = db.execute(
        "SELECT count(*) FROM memories WHERE project_id = %s", (project.id,)
    ).fetchone()
    assert stored == (IDS,)


def test_overlapping_updates_and_deletes_never_deadlock(
    memories: memory_pb2_grpc.MemoryServiceStub,
    project: Project,
    db: psycopg.Connection[tuple[object, ...]],
) -> None:
    ids = [f"u-{i}" for i in range(IDS)]
    memories.BatchUpsertMemories(
        memory_pb2.BatchUpsertMemoriesRequest(
            project_id=project.id, records=[{"id": i} for i in ids[:250]]
        ),
        metadata=project.auth,
    )

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for call in range(CALLS // 2):
            chosen = rng.sample(ids, RECORDS)
            if call % 3 == 2:
                memories.BatchDeleteMemories(
                    memory_pb2.BatchDeleteMemoriesRequest(project_id=project.id, ids=chosen[:20]),
                    metadata=project.auth,
                    timeout=120,
                )
            else:
                memories.BatchUpdateMemories(
                    memory_pb2.BatchUpdateMemoriesRequest(
                        project_id=project.id,
                        updates=[{"id": i, "importance": rng.random()} for i in chosen],
                    ),
                    metadata=project.auth,
                    timeout=120,
                )

    before = deadlocks(db)
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))
    assert deadlocks(db) - before == 0


def test_a_deadlock_is_aborted_not_unavailable(database_url: str) -> None:
    """Two transactions locking two rows in opposite orders: PostgreSQL breaks the deadlock, and
    the victim's error is ABORTED, reason DEADLOCK (retryable; nothing of it was written)."""

    async def lock(first: str, second: str, ready: asyncio.Barrier) -> None:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await conn.execute("SET deadlock_timeout = '50ms'")
            async with translate_errors(), conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (first,))
                await ready.wait()
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (second,))

    async def race() -> list[BaseException | None]:
        ready = asyncio.Barrier(2)
        return await asyncio.gather(
            lock("a", "b", ready), lock("b", "a", ready), return_exceptions=True
        )

    outcomes = asyncio.run(race())
    errors = [e for e in outcomes if e is not None]
    assert len(errors) == 1 and isinstance(errors[0], Aborted)
    assert errors[0].reason == "DEADLOCK"


def test_a_lock_timeout_is_aborted_with_its_own_reason(database_url: str) -> None:
    async def scenario() -> None:
        async with (
            await psycopg.AsyncConnection.connect(database_url) as holder,
            await psycopg.AsyncConnection.connect(database_url) as waiter,
        ):
            await holder.execute("SELECT pg_advisory_lock(42)")
            await waiter.execute("SET lock_timeout = '50ms'")
            with pytest.raises(Aborted) as caught:
                async with translate_errors():
                    await waiter.execute("SELECT pg_advisory_lock(42)")
            assert caught.value.reason == "LOCK_TIMEOUT"

    asyncio.run(scenario())
