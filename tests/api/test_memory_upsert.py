"""BatchUpsertMemories and BatchGetMemories through a real server and channel."""

from __future__ import annotations

import grpc
import psycopg
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2

from tests.plugins.checks import assert_too_large, details
from tests.plugins.server import Project
from zerodb.v1 import common_pb2, memory_pb2
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub

SEED = [
    memory_pb2.Memory(
        content="User prefers concise responses",
        memory_type="semantic",
        importance=0.8,
        tags=["preference", "communication"],
    ),
    memory_pb2.Memory(
        content="Project uses FastAPI + SQLAlchemy",
        memory_type="semantic",
        importance=0.9,
        tags=["tech-stack"],
    ),
]


def upsert(
    stub: MemoryServiceStub, project: Project, records: list[memory_pb2.Memory], **kw: object
) -> memory_pb2.BatchUpsertMemoriesResponse:
    request = memory_pb2.BatchUpsertMemoriesRequest(project_id=project.id, records=records, **kw)
    return stub.BatchUpsertMemories(request, metadata=project.auth)


def count(db: psycopg.Connection[tuple[object, ...]], project: Project) -> int:
    row = db.execute(
        "SELECT count(*) FROM memories WHERE project_id = %s", (project.id,)
    ).fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


def test_seed_upsert_inserts_and_reads_back(memories: MemoryServiceStub, project: Project) -> None:
    reply = upsert(memories, project, SEED)
    assert (reply.inserted, reply.updated, reply.failed) == (2, 0, 0)
    assert [r.outcome for r in reply.results] == [common_pb2.OUTCOME_INSERTED] * 2
    assert [r.index for r in reply.results] == [0, 1]
    assert list(reply.ids) == [r.id for r in reply.results] and all(reply.ids)

    got = memories.BatchGetMemories(
        memory_pb2.BatchGetMemoriesRequest(project_id=project.id, ids=[*reply.ids, "nope"]),
        metadata=project.auth,
    )
    assert [m.content for m in got.memories] == [r.content for r in SEED]
    assert list(got.not_found) == ["nope"]
    first = got.memories[0]
    assert (first.memory_type, first.importance, list(first.tags)) == (
        "semantic",
        pytest.approx(0.8),
        ["preference", "communication"],
    )
    assert first.create_time.seconds > 0


def test_defaults_applied(memories: MemoryServiceStub, project: Project) -> None:
    reply = upsert(memories, project, [memory_pb2.Memory(content="")])
    got = memories.BatchGetMemories(
        memory_pb2.BatchGetMemoriesRequest(project_id=project.id, ids=reply.ids),
        metadata=project.auth,
    )
    assert got.memories[0].memory_type == "episodic"
    assert got.memories[0].importance == pytest.approx(0.5)


def test_upsert_by_id_updates(memories: MemoryServiceStub, project: Project) -> None:
    meta = struct_pb2.Struct()
    meta.update({"source": "chat", "n": 3, "nested": {"ok": True}})
    upsert(memories, project, [memory_pb2.Memory(id="mem-1", content="old", metadata=meta)])
    reply = upsert(
        memories,
        project,
        [
            memory_pb2.Memory(id="mem-1", content="new", importance=0.1, session_id="s1"),
            memory_pb2.Memory(id="mem-2", content="other"),
        ],
    )
    assert [r.outcome for r in reply.results] == [
        common_pb2.OUTCOME_UPDATED,
        common_pb2.OUTCOME_INSERTED,
    ]
    assert (reply.inserted, reply.updated) == (1, 1)
    got = memories.BatchGetMemories(
        memory_pb2.BatchGetMemoriesRequest(project_id=project.id, ids=["mem-1"]),
        metadata=project.auth,
    ).memories[0]
    assert (got.content, got.importance, got.session_id) == ("new", pytest.approx(0.1), "s1")
    assert got.update_time.ToDatetime() >= got.create_time.ToDatetime()


def test_metadata_round_trips(memories: MemoryServiceStub, project: Project) -> None:
    meta = struct_pb2.Struct()
    meta.update({"source": "chat", "n": 3, "ratio": 0.25, "nested": {"ok": True, "l": [1, "a"]}})
    reply = upsert(memories, project, [memory_pb2.Memory(content="x", metadata=meta)])
    got = memories.BatchGetMemories(
        memory_pb2.BatchGetMemoriesRequest(project_id=project.id, ids=reply.ids),
        metadata=project.auth,
    ).memories[0]
    assert got.metadata == meta


def test_backslash_u0000_text_in_metadata_is_stored(
    memories: MemoryServiceStub, project: Project
) -> None:
    """A backslash followed by `u0000` is text, not NUL: PostgreSQL's jsonb takes it too."""
    small, large = struct_pb2.Struct(), struct_pb2.Struct()
    small.update({"path": "C:\\u0000x"})
    large.update({"C:\\u0000": "\\\\u0000", "pad": "y" * 20_000})  # the Checker's path
    records = [memory_pb2.Memory(content="x", metadata=m) for m in (small, large)]
    reply = upsert(memories, project, records)
    got = memories.BatchGetMemories(
        memory_pb2.BatchGetMemoriesRequest(project_id=project.id, ids=reply.ids),
        metadata=project.auth,
    ).memories
    assert [m.metadata for m in got] == [small, large]


def test_batch_get_refuses_bad_ids_not_internal(
    memories: MemoryServiceStub, project: Project
) -> None:
    ids = ["ok", "a\x00b", "i" * 129, ""]
    with pytest.raises(grpc.RpcError) as caught:
        memories.BatchGetMemories(
            memory_pb2.BatchGetMemoriesRequest(project_id=project.id, ids=ids),
            metadata=project.auth,
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = details(caught.value)[1].field_violations
    assert [(v.field, v.reason) for v in violations] == [
        ("ids[1]", "INVALID_CHARACTER"),
        ("ids[2]", "TOO_LONG"),
        ("ids[3]", "REQUIRED"),
    ]


def test_500_accepted_501_refused(
    memories: MemoryServiceStub, project: Project, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    records = [memory_pb2.Memory(content=f"fact {i}") for i in range(501)]
    with pytest.raises(grpc.RpcError) as caught:
        upsert(memories, project, records)
    assert_too_large(caught.value, "records", 500, 501)
    assert count(db, project) == 0

    reply = upsert(memories, project, records[:500])
    assert reply.inserted == 500 and len(set(reply.ids)) == 500
    assert count(db, project) == 500


def test_empty_batch_refused(memories: MemoryServiceStub, project: Project) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        upsert(memories, project, [])
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1].field_violations[0].field == "records"


BAD = [
    memory_pb2.Memory(content="fine"),
    memory_pb2.Memory(content="bad type", memory_type="forever"),
    memory_pb2.Memory(content="bad importance and tag", importance=1.5, tags=["ok", ""]),
    memory_pb2.Memory(id="x" * 129, content="long id"),
]


def test_atomic_batch_lists_every_violation_and_writes_nothing(
    memories: MemoryServiceStub, project: Project, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        upsert(memories, project, BAD)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in details(caught.value)[1].field_violations]
    assert fields == [
        "records[1].memory_type",
        "records[2].importance",
        "records[2].tags[1]",
        "records[3].id",
    ]
    assert "3 of 4" in (caught.value.details() or "")
    assert count(db, project) == 0


def test_partial_success_writes_the_valid_ones(
    memories: MemoryServiceStub, project: Project, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    reply = upsert(memories, project, BAD, partial_success=True)
    assert (reply.inserted, reply.failed) == (1, 3)
    assert [r.outcome for r in reply.results] == [common_pb2.OUTCOME_INSERTED] + [
        common_pb2.OUTCOME_FAILED
    ] * 3
    assert reply.results[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    bad = error_details_pb2.BadRequest()
    assert reply.results[2].error.details[1].Unpack(bad)
    assert [v.field for v in bad.field_violations] == [
        "records[2].importance",
        "records[2].tags[1]",
    ]
    assert reply.ids[1:] == ["", "", ""]
    assert count(db, project) == 1


def test_duplicate_ids_in_one_batch_refused(memories: MemoryServiceStub, project: Project) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        upsert(memories, project, [memory_pb2.Memory(id="a"), memory_pb2.Memory(id="a")])
    violation = details(caught.value)[1].field_violations[0]
    assert (violation.field, violation.reason) == ("records[1].id", "DUPLICATE_ID")


def test_nul_characters_refused_not_internal(memories: MemoryServiceStub, project: Project) -> None:
    meta = struct_pb2.Struct()
    meta.update({"k": "a\x00b"})
    with pytest.raises(grpc.RpcError) as caught:
        upsert(
            memories,
            project,
            [memory_pb2.Memory(content="a\x00"), memory_pb2.Memory(metadata=meta)],
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in details(caught.value)[1].field_violations] == [
        "records[0].content",
        "records[1].metadata",
    ]


def test_request_id_retry_writes_nothing_new(
    memories: MemoryServiceStub, project: Project, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    first = upsert(memories, project, SEED, request_id="req-1")
    again = upsert(memories, project, SEED, request_id="req-1")
    assert again == first
    assert count(db, project) == 2

    with pytest.raises(grpc.RpcError) as caught:
        upsert(memories, project, SEED[:1], request_id="req-1")
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[0].reason == "REQUEST_ID_REUSED"
    assert count(db, project) == 2


def test_request_id_is_per_project(
    memories: MemoryServiceStub, project: Project, server: object
) -> None:
    other = Project(*server.new_key())  # type: ignore[attr-defined]
    a = upsert(memories, project, SEED, request_id="shared")
    b = upsert(memories, other, SEED, request_id="shared")
    assert a.ids != b.ids


def test_atomic_batch_invalid_in_a_late_slice_writes_nothing(
    memories: MemoryServiceStub, project: Project, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    # The upsert is written a slice at a time while later slices validate: a violation in the
    # last slice must still roll back the slices already sent, the request_id claim included.
    records = [memory_pb2.Memory(id=f"m{i}", content=f"fact {i}") for i in range(500)]
    records[300] = memory_pb2.Memory(id="m0", content="duplicate of the first slice")
    records[499] = memory_pb2.Memory(id="m499", memory_type="forever")
    with pytest.raises(grpc.RpcError) as caught:
        upsert(memories, project, records, request_id="late")
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in details(caught.value)[1].field_violations]
    assert fields == ["records[300].id", "records[499].memory_type"]
    assert count(db, project) == 0

    records[300] = memory_pb2.Memory(id="m300", content="fixed")
    records[499] = memory_pb2.Memory(id="m499", content="fixed")
    reply = upsert(memories, project, records, request_id="late")  # the claim was rolled back
    assert reply.inserted == 500 and count(db, project) == 500


def test_partial_batch_across_slices_keeps_request_order(
    memories: MemoryServiceStub, project: Project, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    records = [memory_pb2.Memory(id=f"m{i}", content=f"fact {i}") for i in range(500)]
    upsert(memories, project, records[::2])  # the even ones exist beforehand
    records[7].memory_type = "forever"
    records[402].memory_type = "forever"
    reply = upsert(memories, project, records, partial_success=True)
    assert (reply.inserted, reply.updated, reply.failed) == (249, 249, 2)
    assert [r.index for r in reply.results] == list(range(500))
    assert list(reply.ids) == ["" if i in (7, 402) else f"m{i}" for i in range(500)]
    expected = [
        common_pb2.OUTCOME_FAILED
        if i in (7, 402)
        else common_pb2.OUTCOME_UPDATED
        if i % 2 == 0
        else common_pb2.OUTCOME_INSERTED
        for i in range(500)
    ]
    assert [r.outcome for r in reply.results] == expected
    assert count(db, project) == 499
