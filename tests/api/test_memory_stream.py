"""StreamUpsertMemories and LoadService.GetLoad through a real server and channel."""

from __future__ import annotations

import logging
import queue
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2

from tests.api.test_memory_upsert import count
from tests.plugins.checks import assert_too_large, details, last_offset, wait_for
from tests.plugins.server import Project, ServerThread
from zerodb.v1 import load_pb2, memory_pb2
from zerodb.v1.load_pb2_grpc import LoadServiceStub
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub
from zerodb_batch.storage.queries import Q

Db = psycopg.Connection[tuple[object, ...]]
Request = memory_pb2.StreamUpsertMemoriesRequest


@pytest.fixture
def loads(channel: grpc.Channel) -> LoadServiceStub:
    return LoadServiceStub(channel)


def chunk(
    project: Project, offset: int, n: int = 4, load_id: str = "load-1", **kw: object
) -> Request:
    """n records without ids: a chunk written twice would leave twice the rows."""
    records = [
        memory_pb2.Memory(content=f"{load_id}/{offset}/{i}", tags=["bulk"]) for i in range(n)
    ]
    return Request(project_id=project.id, load_id=load_id, offset=offset, records=records, **kw)


def stream(
    stub: MemoryServiceStub, project: Project, requests: Iterable[Request]
) -> memory_pb2.StreamUpsertMemoriesResponse:
    return stub.StreamUpsertMemories(iter(requests), metadata=project.auth)


def get_load(stub: LoadServiceStub, project: Project, load_id: str = "load-1") -> load_pb2.Load:
    request = load_pb2.GetLoadRequest(project_id=project.id, load_id=load_id)
    return stub.GetLoad(request, metadata=project.auth).load


def contents(db: Db, project: Project) -> list[str]:
    rows = db.execute(
        "SELECT content FROM memories WHERE project_id = %s ORDER BY content", (project.id,)
    ).fetchall()
    return [str(r[0]) for r in rows]


class Feed:
    """A request stream the test writes to while the call runs."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Request | None] = queue.Queue()

    def send(self, request: Request) -> None:
        self._queue.put(request)

    def close(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Iterator[Request]:
        return iter(self._queue.get, None)


def test_chunks_commit_and_get_load_reports_them(
    memories: MemoryServiceStub, loads: LoadServiceStub, project: Project, db: Db
) -> None:
    reply = stream(memories, project, [chunk(project, o) for o in range(3)])
    assert (reply.chunks_committed, reply.chunks_skipped, list(reply.failures)) == (3, 0, [])
    load = reply.load
    assert (load.load_id, load.kind, load.state) == ("load-1", "memories", load_pb2.LOAD_STATE_DONE)
    assert (load.last_offset, load.next_offset, load.chunks_committed, load.inserted) == (
        2,
        3,
        3,
        12,
    )
    assert get_load(loads, project) == load
    assert count(db, project) == 12


def test_cut_stream_resumed_from_get_load_writes_every_record_once(
    memories: MemoryServiceStub, loads: LoadServiceStub, project: Project, db: Db
) -> None:
    feed = Feed()
    call = memories.StreamUpsertMemories.future(iter(feed), metadata=project.auth)
    for offset in range(3):
        feed.send(chunk(project, offset))
    wait_for(lambda: last_offset(loads, project, "load-1") == 2, "chunk 2 to commit")
    call.cancel()  # the stream breaks
    feed.close()
    load = get_load(loads, project)
    assert (load.next_offset, load.state) == (3, load_pb2.LOAD_STATE_RUNNING)

    # The client resends from an earlier offset than needed: duplicates are skipped and counted.
    reply = stream(memories, project, [chunk(project, o) for o in range(1, 6)])
    assert (reply.chunks_committed, reply.chunks_skipped) == (3, 2)
    assert (reply.load.last_offset, reply.load.chunks_committed, reply.load.chunks_skipped) == (
        5,
        6,
        2,
    )
    assert reply.load.state == load_pb2.LOAD_STATE_DONE
    expected = sorted(f"load-1/{o}/{i}" for o in range(6) for i in range(4))
    assert contents(db, project) == expected


def test_cancel_mid_chunk_leaves_no_half_written_chunk(
    memories: MemoryServiceStub,
    loads: LoadServiceStub,
    project: Project,
    db: Db,
    database_url: str,
) -> None:
    stream(memories, project, [chunk(project, 0)])
    first = contents(db, project)
    # Chunk 1 also rewrites a record of chunk 0, whose row this test holds locked: the server
    # gets the chunk into its staging table, then waits inside the chunk's transaction.
    locked = chunk(project, 1, n=50)
    with row_locked(db, database_url, project) as (locker, held):
        locked.records[0].id = held
        feed = Feed()
        call = memories.StreamUpsertMemories.future(iter(feed), metadata=project.auth)
        feed.send(locked)
        wait_for(lambda: chunk_sessions(db, on_lock=True) == 1, "the chunk to wait on the lock")
        call.cancel()
        feed.close()
        wait_for(lambda: chunk_sessions(db, on_lock=False) == 0, "the chunk to be rolled back")
        locker.rollback()
    assert contents(db, project) == first
    assert get_load(loads, project).last_offset == 0

    reply = stream(memories, project, [locked])  # resending the chunk writes it, once
    assert (reply.chunks_committed, reply.load.inserted, reply.load.updated) == (1, 53, 1)
    assert len(contents(db, project)) == 53


def test_a_stream_cancelled_between_chunks_leaves_its_load_running(
    memories: MemoryServiceStub,
    loads: LoadServiceStub,
    project: Project,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """grpc ends the server's request iterator for a cancelled call as for a clean half-close;
    the load must stay RUNNING (resumable), never DONE. A race when wrong: several tries."""
    caplog.set_level(logging.INFO, logger="zerodb_batch.rpc")
    for n in range(10):
        load_id = f"cancelled-{n}"
        caplog.clear()
        feed = Feed()
        call = memories.StreamUpsertMemories.future(iter(feed), metadata=project.auth)
        feed.send(chunk(project, 0, load_id=load_id))
        wait_for(lambda: last_offset(loads, project, load_id) == 0, "chunk 0 to commit")  # noqa: B023
        call.cancel()
        feed.close()
        wait_for(
            lambda: any("StreamUpsertMemories" in r.getMessage() for r in caplog.records),
            "the cancelled call to end in the server",
        )
        assert get_load(loads, project, load_id).state == load_pb2.LOAD_STATE_RUNNING
        reply = stream(memories, project, [chunk(project, 1, load_id=load_id)])  # resumable
        assert (reply.chunks_committed, reply.load.state) == (1, load_pb2.LOAD_STATE_DONE)


def test_a_final_chunk_completes_its_load_even_if_the_call_is_then_cancelled(
    memories: MemoryServiceStub, loads: LoadServiceStub, project: Project
) -> None:
    feed = Feed()
    call = memories.StreamUpsertMemories.future(iter(feed), metadata=project.auth)
    feed.send(chunk(project, 0))
    feed.send(chunk(project, 1, final=True))
    wait_for(lambda: last_offset(loads, project, "load-1") == 1, "the final chunk to commit")
    assert get_load(loads, project).state == load_pb2.LOAD_STATE_DONE  # with the chunk itself
    call.cancel()  # the client never half-closes: what it declared final is still final
    feed.close()
    load = get_load(loads, project)
    assert (load.state, load.last_offset, load.inserted) == (load_pb2.LOAD_STATE_DONE, 1, 8)

    # A resumed stream resending the final chunk skips it and answers DONE.
    reply = stream(memories, project, [chunk(project, 1, final=True)])
    assert (reply.chunks_committed, reply.chunks_skipped) == (0, 1)
    assert reply.load.state == load_pb2.LOAD_STATE_DONE


def test_a_final_chunk_resent_after_it_committed_unmarked_completes_the_load(
    memories: MemoryServiceStub, loads: LoadServiceStub, project: Project
) -> None:
    """A client that learns its stream is over only after sending the last chunk resends it with
    `final`: skipped as already in, it completes the load without waiting for a clean close."""
    feed = Feed()
    call = memories.StreamUpsertMemories.future(iter(feed), metadata=project.auth)
    feed.send(chunk(project, 0))
    feed.send(chunk(project, 1))
    wait_for(lambda: last_offset(loads, project, "load-1") == 1, "chunk 1 to commit")
    assert get_load(loads, project).state == load_pb2.LOAD_STATE_RUNNING
    feed.send(chunk(project, 1, final=True))
    wait_for(
        lambda: get_load(loads, project).state == load_pb2.LOAD_STATE_DONE or None,
        "the resent final chunk to complete the load",
    )
    call.cancel()
    feed.close()
    load = get_load(loads, project)
    assert (load.state, load.chunks_committed, load.chunks_skipped, load.inserted) == (
        load_pb2.LOAD_STATE_DONE,
        2,
        1,
        8,
    )


def test_a_chunk_after_the_final_one_is_refused(
    memories: MemoryServiceStub, loads: LoadServiceStub, project: Project, db: Db
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stream(memories, project, [chunk(project, 0, final=True), chunk(project, 1)])
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    violation = details(caught.value)[1].field_violations[0]
    assert (violation.field, violation.reason) == ("offset", "AFTER_FINAL")
    assert "follows chunk 0, marked final" in caught.value.details()
    load = get_load(loads, project)  # what came before the refusal is in, and complete
    assert (load.state, load.last_offset) == (load_pb2.LOAD_STATE_DONE, 0)
    assert count(db, project) == 4

    # A later stream may still add to the load: its next chunk makes it running, then done.
    reply = stream(memories, project, [chunk(project, 1, final=True)])
    assert (reply.chunks_committed, reply.load.state) == (1, load_pb2.LOAD_STATE_DONE)


@contextmanager
def row_locked(db: Db, database_url: str, project: Project) -> Iterator[tuple[Db, str]]:
    """One of the project's memories locked FOR UPDATE by another session: (that session, id)."""
    row = db.execute("SELECT id FROM memories WHERE project_id = %s LIMIT 1", (project.id,))
    held = row.fetchone()
    assert held is not None
    with psycopg.connect(database_url) as locker:
        locker.execute(
            "SELECT 1 FROM memories WHERE project_id = %s AND id = %s FOR UPDATE",
            (project.id, held[0]),
        )
        yield locker, str(held[0])


def chunk_sessions(db: Db, *, on_lock: bool, statement: str = "FROM memory_chunk_stage") -> int:
    """Server sessions busy in the chunk upsert (or waiting there on a lock), not this test's;
    `statement` names another chunk statement by a part of its text."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND state <> 'idle' AND query LIKE %s"
    )
    lock = " AND wait_event_type = 'Lock'" if on_lock else ""
    row = db.execute(query + lock, (f"%{statement}%",)).fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


def test_a_chunk_of_new_ids_takes_them_in_code_point_order(
    memories: MemoryServiceStub, project: Project, db: Db, database_url: str
) -> None:
    """A chunk of new ids inserts them in code-point order whatever order it came in, as a batch
    does, so a load and a batch creating the same ids wait for each other instead of
    deadlocking. Seen from outside: while the chunk waits on "b", which another session has
    inserted and not committed, it holds "a" and not yet "c"."""
    insert = (
        "INSERT INTO memories (project_id, id, content, memory_type, importance)"
        " VALUES (%s, %s, '', 'semantic', 0.5)"
    )
    records = [memory_pb2.Memory(id=i, content=i) for i in "cab"]
    chunk = Request(project_id=project.id, load_id="ordered", records=records, final=True)
    held, reply = held_by_a_chunk(
        memories.StreamUpsertMemories, chunk, project, insert, (db, database_url)
    )
    assert held == [True, False]
    assert (reply.load.inserted, sorted(contents(db, project))) == (3, ["a", "b", "c"])


def held_by_a_chunk(
    method: Any, chunk: Any, project: Project, insert: str, dbs: tuple[Db, str]
) -> tuple[list[bool], Any]:
    """Another session inserts "b" (`insert`: project and id) and keeps it uncommitted while
    `chunk`, the final one of its load, streams through `method` (a Stream* RPC). Once the
    chunk's COPY waits on "b": whether it holds "a", and "c". Then "b" is let go: (those, the
    reply)."""
    db, database_url = dbs
    statement = "COPY " + insert.split()[2]  # the chunk's COPY into the same table
    with psycopg.connect(database_url) as other:
        other.execute(insert, (project.id, "b"))
        feed = Feed()
        call = method.future(iter(feed), metadata=project.auth)
        feed.send(chunk)
        feed.close()
        try:
            wait_for(
                lambda: chunk_sessions(db, on_lock=True, statement=statement) == 1,
                "the chunk to wait on b",
            )
            held = [taken(database_url, insert, (project.id, i)) for i in "ac"]
        finally:
            other.rollback()  # the chunk goes on, whatever this test found
    return held, call.result(timeout=30)


def taken(database_url: str, insert: str, params: tuple[object, ...]) -> bool:
    """Whether another session holds the row `insert` would make: it then waits, until its
    lock timeout. Nothing is written either way."""
    with psycopg.connect(database_url) as probe:
        probe.execute("SET lock_timeout = '100ms'")
        try:
            probe.execute(insert, params)
        except psycopg.errors.LockNotAvailable:
            return True
        finally:
            probe.rollback()
        return False


def test_gap_refused_naming_the_expected_offset(
    memories: MemoryServiceStub, loads: LoadServiceStub, project: Project, db: Db
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stream(memories, project, [chunk(project, 1)])
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    info = details(caught.value)[0]
    assert (info.reason, info.metadata["expected_offset"]) == ("OFFSET_GAP", "0")
    assert "next offset to send is 0" in (caught.value.details() or "")

    with pytest.raises(grpc.RpcError) as later:
        stream(memories, project, [chunk(project, 0), chunk(project, 2)])
    assert details(later.value)[0].metadata["expected_offset"] == "1"
    assert get_load(loads, project).last_offset == 0
    assert count(db, project) == 4


def test_a_stream_ending_in_an_error_still_counts_its_skipped_chunks(
    memories: MemoryServiceStub, loads: LoadServiceStub, project: Project
) -> None:
    stream(memories, project, [chunk(project, 0), chunk(project, 1)])
    with pytest.raises(grpc.RpcError) as caught:  # two duplicates, then a gap
        stream(memories, project, [chunk(project, 0), chunk(project, 1), chunk(project, 5)])
    assert details(caught.value)[0].reason == "OFFSET_GAP"
    load = get_load(loads, project)
    assert (load.chunks_committed, load.chunks_skipped, load.inserted) == (2, 2, 8)


def test_invalid_record_refuses_its_chunk_atomically(
    memories: MemoryServiceStub, loads: LoadServiceStub, project: Project, db: Db
) -> None:
    bad = chunk(project, 1)
    bad.records[2].importance = 1.5
    with pytest.raises(grpc.RpcError) as caught:
        stream(memories, project, [chunk(project, 0), bad, chunk(project, 2)])
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    info, violations = details(caught.value)
    assert [v.field for v in violations.field_violations] == ["records[2].importance"]
    assert info.metadata["offset"] == "1"
    assert "chunk 1" in (caught.value.details() or "")
    assert get_load(loads, project).last_offset == 0
    assert count(db, project) == 4


def test_partial_success_reports_each_refused_record(
    memories: MemoryServiceStub, project: Project, db: Db
) -> None:
    mixed = chunk(project, 1, partial_success=True)
    mixed.records[1].memory_type = "forever"
    mixed.records[3].tags.append("")
    reply = stream(memories, project, [chunk(project, 0), mixed])
    assert [(f.offset, f.index) for f in reply.failures] == [(1, 1), (1, 3)]
    bad = error_details_pb2.BadRequest()
    assert reply.failures[1].error.details[1].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["records[3].tags[1]"]
    assert (reply.load.inserted, reply.load.failed, reply.load.last_offset) == (6, 2, 1)
    assert count(db, project) == 6


def test_refusals_come_in_request_order_whatever_the_ids(
    memories: MemoryServiceStub, project: Project
) -> None:
    """A chunk is validated in id order (its lock order); what it refuses is told in the order
    the records came."""
    records = [memory_pb2.Memory(id=i, importance=2.0) for i in "zya"]
    partial = Request(project_id=project.id, load_id="p", records=records, partial_success=True)
    assert [f.index for f in stream(memories, project, [partial]).failures] == [0, 1, 2]
    with pytest.raises(grpc.RpcError) as caught:
        stream(memories, project, [Request(project_id=project.id, load_id="a", records=records)])
    fields = [v.field for v in details(caught.value)[1].field_violations]
    assert fields == ["records[0].importance", "records[1].importance", "records[2].importance"]


def test_failures_listed_are_capped(memories: MemoryServiceStub, project: Project) -> None:
    bad = chunk(project, 0, n=1001, partial_success=True)
    for record in bad.records:
        record.importance = 2.0
    reply = stream(memories, project, [bad])
    assert (len(reply.failures), reply.load.failed, reply.load.inserted) == (1000, 1001, 0)


def test_records_with_ids_upsert(memories: MemoryServiceStub, project: Project) -> None:
    with_ids = chunk(project, 0)
    for i, record in enumerate(with_ids.records):
        record.id = f"fixed-{i}"
    first = stream(memories, project, [with_ids])
    with_ids.load_id = "load-2"
    again = stream(memories, project, [with_ids])
    assert (first.load.inserted, again.load.inserted, again.load.updated) == (4, 0, 4)


def test_an_existing_id_mid_stream_switches_to_upserts(
    memories: MemoryServiceStub, project: Project, db: Db
) -> None:
    """Chunk 0 goes straight in by COPY; chunk 1 rewrites one of its records, so its COPY
    attempt rolls back and the chunk is upserted, counted as 3 inserted and 1 updated."""
    first, second = chunk(project, 0), chunk(project, 1)
    first.records[0].id = second.records[0].id = "shared"
    reply = stream(memories, project, [first, second])
    assert (reply.chunks_committed, reply.load.inserted, reply.load.updated) == (2, 7, 1)
    assert len(contents(db, project)) == 7
    assert "load-1/1/0" in contents(db, project)  # the rewrite won


def test_chunk_limits(memories: MemoryServiceStub, project: Project, db: Db) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stream(memories, project, [chunk(project, 0, n=5001)])
    assert_too_large(caught.value, "records", 5000, 5001)
    assert count(db, project) == 0
    assert stream(memories, project, [chunk(project, 0, n=5000)]).load.inserted == 5000

    for requests in ([chunk(project, 1, n=0)], []):
        with pytest.raises(grpc.RpcError) as empty:
            stream(memories, project, requests)
        assert empty.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_load_id_checked(memories: MemoryServiceStub, project: Project) -> None:
    with pytest.raises(grpc.RpcError) as missing:
        stream(memories, project, [chunk(project, 0, load_id="")])
    assert details(missing.value)[1].field_violations[0].field == "load_id"
    with pytest.raises(grpc.RpcError) as changed:
        stream(memories, project, [chunk(project, 0), chunk(project, 1, load_id="other")])
    assert details(changed.value)[1].field_violations[0].reason == "LOAD_ID_CHANGED"
    with pytest.raises(grpc.RpcError) as negative:
        stream(memories, project, [chunk(project, -1, load_id="neg")])
    assert details(negative.value)[1].field_violations[0].field == "offset"


def test_load_of_another_kind_refused(
    memories: MemoryServiceStub, project: Project, db: Db
) -> None:
    db.execute(
        "INSERT INTO loads (project_id, load_id, kind, last_offset) "
        "VALUES (%s, 'load-1', 'vectors', 0)",
        (project.id,),
    )
    with pytest.raises(grpc.RpcError) as caught:
        stream(memories, project, [chunk(project, 1)])
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert details(caught.value)[0].reason == "LOAD_KIND_MISMATCH"


def test_get_load_not_found_and_invalid(loads: LoadServiceStub, project: Project) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        get_load(loads, project, "never")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert details(caught.value)[0].reason == "LOAD_NOT_FOUND"
    with pytest.raises(grpc.RpcError) as invalid:
        get_load(loads, project, "")
    assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_another_projects_key_on_a_stream_message(
    memories: MemoryServiceStub,
    loads: LoadServiceStub,
    project: Project,
    server: ServerThread,
    db: Db,
) -> None:
    other = Project(*server.new_key())
    foreign = chunk(project, 1)
    foreign.project_id = other.id  # one message of the stream names another project
    with pytest.raises(grpc.RpcError) as caught:
        stream(memories, project, [chunk(project, 0), foreign])
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert details(caught.value)[0].reason == "PROJECT_MISMATCH"
    assert count(db, other) == 0 and count(db, project) == 4

    with pytest.raises(grpc.RpcError) as keyless:
        memories.StreamUpsertMemories(iter([chunk(project, 1)]))
    assert keyless.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as peeking:
        loads.GetLoad(
            load_pb2.GetLoadRequest(project_id=project.id, load_id="load-1"), metadata=other.auth
        )
    assert peeking.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as elsewhere:
        get_load(loads, other)  # the same load id in another project is another load
    assert elsewhere.value.code() is grpc.StatusCode.NOT_FOUND


def test_two_streams_of_one_load_never_write_a_chunk_twice(
    memories: MemoryServiceStub,
    loads: LoadServiceStub,
    project: Project,
    db: Db,
    database_url: str,
) -> None:
    stream(memories, project, [chunk(project, 0)])
    # Stream B's chunk 1 rewrites a row this test holds locked, so B waits inside its chunk
    # transaction while stream A commits its own chunk 1 of the same load.
    late = chunk(project, 1, load_id="load-1")
    with row_locked(db, database_url, project) as (locker, held):
        late.records[0].id = held
        feed = Feed()
        b = memories.StreamUpsertMemories.future(iter(feed), metadata=project.auth)
        feed.send(late)
        feed.close()
        wait_for(lambda: chunk_sessions(db, on_lock=True) == 1, "stream B to wait on the lock")
        a = stream(memories, project, [chunk(project, 1)])
        assert a.chunks_committed == 1
        locker.rollback()
    reply = b.result(timeout=30)
    assert (reply.chunks_committed, reply.chunks_skipped) == (0, 1)  # rolled back, then skipped
    assert reply.load.chunks_committed == 2
    assert len(contents(db, project)) == 8


def test_a_stream_closing_behind_another_leaves_the_load_running(
    memories: MemoryServiceStub, loads: LoadServiceStub, project: Project, db: Db
) -> None:
    feed = Feed()
    ahead = memories.StreamUpsertMemories.future(iter(feed), metadata=project.auth)
    for offset in range(3):
        feed.send(chunk(project, offset))
    wait_for(lambda: last_offset(loads, project, "load-1") == 2, "the open stream at chunk 2")

    # A second stream resends chunk 1 and closes while the first is open and ahead of it.
    behind = stream(memories, project, [chunk(project, 1)])
    assert (behind.chunks_skipped, behind.load.state) == (1, load_pb2.LOAD_STATE_RUNNING)
    assert get_load(loads, project).state == load_pb2.LOAD_STATE_RUNNING

    feed.send(chunk(project, 3))
    feed.close()
    done = ahead.result(timeout=30)
    assert (done.load.last_offset, done.load.state) == (3, load_pb2.LOAD_STATE_DONE)
    # A stale stream closing later leaves a done load done; one resending the last chunk too.
    for offset in (0, 3):
        again = stream(memories, project, [chunk(project, offset)])
        assert again.load.state == load_pb2.LOAD_STATE_DONE
    assert get_load(loads, project).chunks_skipped == 3
    assert len(contents(db, project)) == 16


def awkward_records() -> list[memory_pb2.Memory]:
    """Every character COPY's text format or an array literal treats specially, in every field."""
    nasty = memory_pb2.Memory(
        id="tab\tid\\N",
        content="line\nbreak\r\nand\ttab, \\backslash, \\N and \\.",
        memory_type="working",
        importance=0.0,
        tags=['quote"d', "back\\slash", "comma,brace}{", "NULL", " padded ", "tab\there", "ünï😀"],
        session_id="s\\1",
        agent_id="a\tb",
        entity_id="e\nf",
    )
    nasty.metadata.update(
        {
            "path": "C:\\dir\\file",
            "quote": 'say "hi"',
            "controls": "a\nb\tc\rd",
            "nested": {"list": [1, 2.5, None, True, "s\\"], "empty": {}},
            "uni": "ü😀",
        }
    )
    bare = memory_pb2.Memory(id="bare", importance=1.0)  # empty content, tags and metadata
    return [nasty, bare]


def fetch(stub: MemoryServiceStub, project: Project, ids: list[str]) -> list[memory_pb2.Memory]:
    request = memory_pb2.BatchGetMemoriesRequest(project_id=project.id, ids=ids)
    return list(stub.BatchGetMemories(request, metadata=project.auth).memories)


def assert_stored(stub: MemoryServiceStub, project: Project, sent: list[memory_pb2.Memory]) -> None:
    got = {m.id: m for m in fetch(stub, project, [m.id for m in sent])}
    for record in sent:
        stored = got[record.id]
        stored.ClearField("create_time")
        stored.ClearField("update_time")
        expected = memory_pb2.Memory()
        expected.CopyFrom(record)
        expected.memory_type = expected.memory_type or "episodic"
        expected.metadata.SetInParent()  # always present in answers, '{}' when empty
        assert stored == expected


def test_values_round_trip_through_both_copy_paths(
    memories: MemoryServiceStub, project: Project
) -> None:
    """New records go in by COPY straight into the table, existing ones through the staging
    upsert: both must store every value exactly as sent."""
    records = awkward_records()
    first = Request(project_id=project.id, load_id="awkward-1", offset=0, records=records)
    assert stream(memories, project, [first]).load.inserted == 2
    assert_stored(memories, project, records)

    for record in records:
        record.content += "\\\t\n changed"
        record.tags.append('{"x", \\y}')
    again = Request(project_id=project.id, load_id="awkward-2", offset=0, records=records)
    assert stream(memories, project, [again]).load.updated == 2
    assert_stored(memories, project, records)


def committed(stub: LoadServiceStub, project: Project) -> int:
    """The load's last committed offset, -1 before its first chunk."""
    try:
        return get_load(stub, project).last_offset
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND
        return -1


def connections_in_use(server: ServerThread) -> int:
    """Taken and not given back, by the pool's counters (a connection the pool is opening in
    the background counts too for a moment: poll this)."""

    async def stats() -> dict[str, int]:
        return server.app.db.pool.get_stats()

    counted = server.run(stats())
    return counted["pool_size"] - counted["pool_available"]


def test_stream_holds_no_connection_while_the_client_is_silent(
    memories: MemoryServiceStub, loads: LoadServiceStub, project: Project, server: ServerThread
) -> None:
    feed = Feed()
    call = memories.StreamUpsertMemories.future(iter(feed), metadata=project.auth)
    feed.send(chunk(project, 0))
    wait_for(lambda: committed(loads, project) == 0 or None, "chunk 0 to commit")
    wait_for(lambda: connections_in_use(server) == 0 or None, "the connection to go back")
    feed.send(chunk(project, 1))
    feed.close()
    assert call.result().chunks_committed == 2
    wait_for(lambda: connections_in_use(server) == 0 or None, "the connection to go back")

    with pytest.raises(grpc.RpcError):  # a stream refused mid-way gives its connection back too
        bad = chunk(project, 3, load_id="load-2")
        stream(memories, project, [chunk(project, 0, load_id="load-2"), bad])
    wait_for(lambda: connections_in_use(server) == 0 or None, "the connection to go back")


def test_chunk_transactions_commit_without_waiting_for_the_wal_flush(
    db: Db, project: Project
) -> None:
    params = {
        "project_id": project.id, "load_id": "wal", "kind": "memories", "offset": 0, "final": False,
        "inserted": 0, "updated": 0, "failed": 0, "skipped": 0,
    }  # fmt: skip
    with db.transaction():
        assert db.execute(Q["load_advance"], params).fetchone() is not None
        assert db.execute("SHOW synchronous_commit").fetchone() == ("off",)
    assert db.execute("SHOW synchronous_commit").fetchone() == ("on",)  # for that transaction only
    with db.transaction():  # a final chunk's commit says the load is done: it waits for the flush
        assert db.execute(Q["load_advance"], {**params, "offset": 1, "final": True}).fetchone()
        assert db.execute("SHOW synchronous_commit").fetchone() == ("on",)
