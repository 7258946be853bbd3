"""Every RPC honours the client's deadline: SQL held behind a lock that the test takes is
cancelled when the deadline passes, its transaction rolled back, its connection back in the pool,
and the next call works.

No code of ours measures time here: grpc cancels the handler's task when the deadline passes,
and psycopg answers a cancelled task by cancelling its query in the server. These tests hold
that for each kind of call (unary read, unary write, client stream, server stream, parallel
reads, a publish to the outbox)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
import psycopg
import pytest
from google.protobuf import json_format

from tests.api.test_memory_stream import chunk
from tests.api.test_memory_upsert import SEED
from tests.plugins.checks import details, wait_for
from tests.plugins.metrics import scrape
from tests.plugins.server import Project, ServerThread
from tests.plugins.tables import batch, create_table, insert_rows
from zerodb.v1 import event_pb2, load_pb2, memory_pb2, rlhf_pb2, table_pb2
from zerodb.v1.event_pb2_grpc import EventServiceStub
from zerodb.v1.load_pb2_grpc import LoadServiceStub
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub
from zerodb.v1.rlhf_pb2_grpc import RlhfServiceStub
from zerodb.v1.table_pb2_grpc import TableServiceStub

DEADLINE = 1.0  # the client's; the lock is held far longer
PENDING = "zerodb_event_outbox_pending"
DB = psycopg.Connection[tuple[object, ...]]


@contextmanager
def locked(database_url: str, statement: str, *params: object) -> Iterator[None]:
    """A transaction of the test's own holding a lock (`statement`) until the block ends."""
    with psycopg.connect(database_url) as locker:
        locker.execute(statement, params)  # type: ignore[arg-type]
        yield
        locker.rollback()


def server_sessions(db: DB, what: str) -> list[object]:
    """The other sessions on the test database that wait on a lock or sit in a transaction."""
    return db.execute(
        "SELECT pid, state, wait_event_type, query FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND backend_type = 'client backend'"
        " AND (wait_event_type = 'Lock' OR state LIKE 'idle in transaction%%')"
        " AND query NOT LIKE %s",
        (f"%{what}%",),
    ).fetchall()


def expire(call: Callable[[], object]) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


def settled(server: ServerThread, db: DB, lock: str) -> None:
    """The server's statement was cancelled (no session of the server waits on the lock or sits
    in a transaction) and every connection is back in the pool."""
    wait_for(lambda: server_sessions(db, lock) == [], "the statement to be cancelled")

    def idle() -> bool:
        stats = server.app.db.stats()
        return stats["pool_available"] == stats["pool_size"] and not stats["requests_waiting"]

    wait_for(idle, "every connection back in the pool")


def test_a_read_behind_a_lock_is_cancelled_at_the_deadline(
    memories: MemoryServiceStub, project: Project, server: ServerThread, database_url: str, db: DB
) -> None:
    ids = list(
        memories.BatchUpsertMemories(
            memory_pb2.BatchUpsertMemoriesRequest(project_id=project.id, records=SEED),
            metadata=project.auth,
        ).ids
    )
    get = memory_pb2.BatchGetMemoriesRequest(project_id=project.id, ids=ids)
    lock = "LOCK TABLE memories IN ACCESS EXCLUSIVE MODE"
    with locked(database_url, lock):
        expire(lambda: memories.BatchGetMemories(get, metadata=project.auth, timeout=DEADLINE))
        settled(server, db, lock)
    assert len(memories.BatchGetMemories(get, metadata=project.auth).memories) == 2


def test_a_write_behind_a_row_lock_rolls_back_at_the_deadline(
    memories: MemoryServiceStub, project: Project, server: ServerThread, database_url: str, db: DB
) -> None:
    memories.BatchUpsertMemories(
        memory_pb2.BatchUpsertMemoriesRequest(project_id=project.id, records=[{"id": "z-held"}]),
        metadata=project.auth,
    )
    # "a-new" is written (ids in order) before the upsert waits for the row the test holds.
    upsert = memory_pb2.BatchUpsertMemoriesRequest(
        project_id=project.id,
        request_id="deadline-1",
        records=[{"id": "a-new", "content": "x"}, {"id": "z-held", "content": "y"}],
    )
    lock = "SELECT 1 FROM memories WHERE project_id = %s AND id = 'z-held' FOR UPDATE"
    with locked(database_url, lock, project.id):
        expire(
            lambda: memories.BatchUpsertMemories(upsert, metadata=project.auth, timeout=DEADLINE)
        )
        settled(server, db, "FOR UPDATE")
        rows = db.execute(
            "SELECT id FROM memories WHERE project_id = %s ORDER BY id", (project.id,)
        ).fetchall()
        assert rows == [("z-held",)]  # rolled back: nothing of the call is there
    again = memories.BatchUpsertMemories(upsert, metadata=project.auth)  # the same request_id
    assert (again.inserted, again.updated) == (1, 1)


def test_a_client_stream_behind_a_lock_is_cancelled_at_the_deadline(
    memories: MemoryServiceStub,
    channel: grpc.Channel,
    project: Project,
    server: ServerThread,
    database_url: str,
    db: DB,
) -> None:
    lock = "LOCK TABLE memories IN ACCESS EXCLUSIVE MODE"
    chunks = [chunk(project, 0, load_id="held"), chunk(project, 1, load_id="held")]
    with locked(database_url, lock):
        expire(
            lambda: memories.StreamUpsertMemories(
                iter(chunks), metadata=project.auth, timeout=DEADLINE
            )
        )
        settled(server, db, lock)
    get = load_pb2.GetLoadRequest(project_id=project.id, load_id="held")
    with pytest.raises(grpc.RpcError) as caught:  # no chunk was committed
        LoadServiceStub(channel).GetLoad(get, metadata=project.auth)
    assert details(caught.value)[0].reason == "LOAD_NOT_FOUND"
    done = memories.StreamUpsertMemories(iter(chunks), metadata=project.auth)
    assert (done.load.inserted, done.chunks_skipped) == (8, 0)


def test_parallel_reads_behind_a_lock_are_cancelled_at_the_deadline(
    table_service: TableServiceStub,
    project: Project,
    server: ServerThread,
    database_url: str,
    db: DB,
) -> None:
    create_table(table_service, project, "slow", "n")
    insert_rows(table_service, project, "slow", [{"n": i} for i in range(10)])
    body = {"operations": [{"table": "slow", "filters": {"n": {"$gte": i}}} for i in range(6)],
            "parallel": True}  # fmt: skip
    request = json_format.ParseDict(body, table_pb2.BatchQueryRequest(project_id=project.id))
    lock = "LOCK TABLE table_rows IN ACCESS EXCLUSIVE MODE"
    with locked(database_url, lock):
        expire(lambda: table_service.BatchQuery(request, metadata=project.auth, timeout=DEADLINE))
        settled(server, db, lock)
    assert batch(table_service, project, body).succeeded == 6


def test_a_server_stream_behind_a_lock_is_cancelled_at_the_deadline(
    rlhf: RlhfServiceStub, project: Project, server: ServerThread, database_url: str, db: DB
) -> None:
    interactions = [rlhf_pb2.Interaction(prompt="p", response="r")]
    rlhf.BatchCreateInteractions(
        rlhf_pb2.BatchCreateInteractionsRequest(project_id=project.id, interactions=interactions),
        metadata=project.auth,
    )
    request = rlhf_pb2.ExportInteractionsRequest(project_id=project.id)
    lock = "LOCK TABLE interactions IN ACCESS EXCLUSIVE MODE"
    with locked(database_url, lock):
        expire(
            lambda: list(rlhf.ExportInteractions(request, metadata=project.auth, timeout=DEADLINE))
        )
        settled(server, db, lock)
    assert len(list(rlhf.ExportInteractions(request, metadata=project.auth))) == 1


def test_a_publish_behind_a_lock_writes_nothing_at_the_deadline(
    channel: grpc.Channel, project: Project, server: ServerThread, database_url: str, db: DB
) -> None:
    events = EventServiceStub(channel)
    publish = event_pb2.BatchPublishEventsRequest(
        project_id=project.id, events=[event_pb2.Event(topic="t.held")], request_id="held-1"
    )
    lock = "LOCK TABLE events IN ACCESS EXCLUSIVE MODE"
    with locked(database_url, lock):
        expire(lambda: events.BatchPublishEvents(publish, metadata=project.auth, timeout=DEADLINE))
        settled(server, db, lock)
    stored = db.execute("SELECT count(*) FROM events WHERE project_id = %s", (project.id,))
    assert stored.fetchone() == (0,)
    assert events.BatchPublishEvents(publish, metadata=project.auth).published == 1


def test_a_metrics_sample_behind_a_lock_gives_up(
    server: ServerThread, database_url: str, db: DB
) -> None:
    """The relay-lag gauge's query (run every few seconds and on each scrape) waits at most a
    second for a lock: a table held by maintenance must not keep a pooled connection waiting."""
    assert server.http is not None
    lock = "LOCK TABLE events IN ACCESS EXCLUSIVE MODE"
    with locked(database_url, lock):
        # The scrape samples now (the query cannot but meet the lock) and waits 1 s at most.
        assert PENDING in scrape(server.http).text
        settled(server, db, lock)
