"""BatchUpdateMemories through a real server and channel: present fields, masks, outcomes."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from google.rpc import error_details_pb2

from tests.api.test_memory_upsert import upsert
from tests.plugins.checks import assert_too_large, details
from tests.plugins.server import Project
from zerodb.v1 import common_pb2, memory_pb2
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub


def seed(stub: MemoryServiceStub, project: Project, *ids: str) -> None:
    meta = struct_pb2.Struct()
    meta.update({"source": "chat"})
    upsert(
        stub,
        project,
        [
            memory_pb2.Memory(
                id=i,
                content=f"about {i}",
                memory_type="semantic",
                importance=0.4,
                tags=["old"],
                metadata=meta,
                session_id="s1",
                agent_id="a1",
                entity_id="e1",
            )
            for i in ids
        ],
    )


def update(
    stub: MemoryServiceStub, project: Project, updates: list[memory_pb2.MemoryUpdate], **kw: object
) -> memory_pb2.BatchUpdateMemoriesResponse:
    request = memory_pb2.BatchUpdateMemoriesRequest(project_id=project.id, updates=updates, **kw)
    return stub.BatchUpdateMemories(request, metadata=project.auth)


def get(stub: MemoryServiceStub, project: Project, memory_id: str) -> memory_pb2.Memory:
    request = memory_pb2.BatchGetMemoriesRequest(project_id=project.id, ids=[memory_id])
    return stub.BatchGetMemories(request, metadata=project.auth).memories[0]


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=paths)


def test_seed_body_changes_only_present_fields(
    memories: MemoryServiceStub, project: Project
) -> None:
    seed(memories, project, "mem-abc123")
    before = get(memories, project, "mem-abc123")
    reply = update(
        memories,
        project,
        [
            memory_pb2.MemoryUpdate(
                id="mem-abc123", importance=0.95, tags=["preference", "high-priority"]
            )
        ],
    )
    assert (reply.updated, reply.not_found, reply.failed) == (1, 0, 0)
    assert reply.results[0].outcome == common_pb2.OUTCOME_UPDATED
    after = get(memories, project, "mem-abc123")
    assert after.importance == pytest.approx(0.95)
    assert list(after.tags) == ["preference", "high-priority"]
    unchanged = ("content", "memory_type", "metadata", "session_id", "agent_id", "entity_id")
    assert [getattr(after, f) for f in unchanged] == [getattr(before, f) for f in unchanged]
    assert after.create_time == before.create_time
    assert after.update_time.ToDatetime() > before.update_time.ToDatetime()


def test_empty_string_of_a_present_optional_clears_it(
    memories: MemoryServiceStub, project: Project
) -> None:
    seed(memories, project, "m1")
    update(memories, project, [memory_pb2.MemoryUpdate(id="m1", session_id="", content="")])
    after = get(memories, project, "m1")
    assert (after.session_id, after.content, after.agent_id) == ("", "", "a1")


def test_batch_mask_sets_named_fields_and_clears_unset_ones(
    memories: MemoryServiceStub, project: Project
) -> None:
    seed(memories, project, "m1", "m2")
    reply = update(
        memories,
        project,
        [
            memory_pb2.MemoryUpdate(id="m1", content="new", importance=0.9),
            memory_pb2.MemoryUpdate(id="m2"),
        ],
        update_mask=mask("content", "tags", "metadata", "agent_id"),
    )
    assert reply.updated == 2
    m1, m2 = get(memories, project, "m1"), get(memories, project, "m2")
    # importance is present on m1 but not in the mask: untouched.
    assert (m1.content, m1.importance) == ("new", pytest.approx(0.4))
    for m in (m1, m2):
        assert (list(m.tags), dict(m.metadata), m.agent_id) == ([], {}, "")
        assert (m.session_id, m.memory_type) == ("s1", "semantic")
    assert m2.content == ""


def test_item_mask_overrides_batch_mask(memories: MemoryServiceStub, project: Project) -> None:
    seed(memories, project, "m1", "m2")
    update(
        memories,
        project,
        [
            memory_pb2.MemoryUpdate(
                id="m1", memory_type="working", importance=0.1, update_mask=mask("memory_type")
            ),
            memory_pb2.MemoryUpdate(id="m2", memory_type="working", importance=0.1),
        ],
        update_mask=mask("importance"),
    )
    m1, m2 = get(memories, project, "m1"), get(memories, project, "m2")
    assert (m1.memory_type, m1.importance) == ("working", pytest.approx(0.4))
    assert (m2.memory_type, m2.importance) == ("semantic", pytest.approx(0.1))


def test_star_mask_resets_every_unset_field_to_its_default(
    memories: MemoryServiceStub, project: Project
) -> None:
    seed(memories, project, "m1")
    update(
        memories, project, [memory_pb2.MemoryUpdate(id="m1", content="only", update_mask=mask("*"))]
    )
    m = get(memories, project, "m1")
    assert (m.content, m.memory_type, m.importance, list(m.tags)) == (
        "only",
        "episodic",
        pytest.approx(0.5),
        [],
    )
    assert (m.session_id, m.agent_id, m.entity_id, dict(m.metadata)) == ("", "", "", {})


def test_unknown_ids_are_per_item_not_found(memories: MemoryServiceStub, project: Project) -> None:
    seed(memories, project, "m1")
    reply = update(
        memories,
        project,
        [
            memory_pb2.MemoryUpdate(id="ghost", content="x"),
            memory_pb2.MemoryUpdate(id="m1", content="y"),
        ],
    )
    assert [(r.index, r.id, r.outcome) for r in reply.results] == [
        (0, "ghost", common_pb2.OUTCOME_NOT_FOUND),
        (1, "m1", common_pb2.OUTCOME_UPDATED),
    ]
    assert (reply.updated, reply.not_found) == (1, 1)


def test_another_projects_memory_is_not_found(
    memories: MemoryServiceStub, project: Project, server: object
) -> None:
    other = Project(*server.new_key())  # type: ignore[attr-defined]
    seed(memories, other, "theirs")
    reply = update(memories, project, [memory_pb2.MemoryUpdate(id="theirs", content="mine now")])
    assert reply.results[0].outcome == common_pb2.OUTCOME_NOT_FOUND
    assert get(memories, other, "theirs").content == "about theirs"


def test_500_accepted_501_refused(memories: MemoryServiceStub, project: Project) -> None:
    seed(memories, project, *[f"m{i}" for i in range(500)])
    updates = [memory_pb2.MemoryUpdate(id=f"m{i}", importance=0.9) for i in range(501)]
    with pytest.raises(grpc.RpcError) as caught:
        update(memories, project, updates)
    assert_too_large(caught.value, "updates", 500, 501)
    assert get(memories, project, "m0").importance == pytest.approx(0.4)
    assert update(memories, project, updates[:500]).updated == 500


BAD = [
    memory_pb2.MemoryUpdate(id="m1", importance=0.7),
    memory_pb2.MemoryUpdate(id="m1", content="again"),
    memory_pb2.MemoryUpdate(id="", content="no id"),
    memory_pb2.MemoryUpdate(id="m2", importance=2.0, memory_type="forever"),
    memory_pb2.MemoryUpdate(id="m4"),
    memory_pb2.MemoryUpdate(id="m5", update_mask=mask("create_time")),
    memory_pb2.MemoryUpdate(id="m6", metadata={}),  # an empty Struct sets nothing
]


def test_atomic_batch_lists_every_violation_and_writes_nothing(
    memories: MemoryServiceStub, project: Project
) -> None:
    seed(memories, project, "m1", "m2")
    with pytest.raises(grpc.RpcError) as caught:
        update(memories, project, BAD)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = [(v.field, v.reason) for v in details(caught.value)[1].field_violations]
    assert violations == [
        ("updates[1].id", "DUPLICATE_ID"),
        ("updates[2].id", "REQUIRED"),
        ("updates[3].memory_type", "INVALID_VALUE"),
        ("updates[3].importance", "OUT_OF_RANGE"),
        ("updates[4].update_mask", "EMPTY_UPDATE"),
        ("updates[5].update_mask.paths[0]", "UNKNOWN_FIELD"),
        ("updates[6].update_mask", "EMPTY_UPDATE"),
    ]
    assert get(memories, project, "m1").importance == pytest.approx(0.4)


def test_partial_success_applies_the_valid_ones(
    memories: MemoryServiceStub, project: Project
) -> None:
    seed(memories, project, "m1", "m2")
    reply = update(memories, project, BAD, partial_success=True)
    assert (reply.updated, reply.not_found, reply.failed) == (1, 0, 6)
    assert [r.outcome for r in reply.results] == [common_pb2.OUTCOME_UPDATED] + [
        common_pb2.OUTCOME_FAILED
    ] * 6
    assert reply.results[3].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert get(memories, project, "m1").importance == pytest.approx(0.7)


def test_unknown_batch_mask_path_refused(memories: MemoryServiceStub, project: Project) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        update(
            memories,
            project,
            [memory_pb2.MemoryUpdate(id="m1")],
            update_mask=mask("content", "id"),
            partial_success=True,
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1].field_violations[0].field == "update_mask.paths[1]"


def test_request_id_retry_returns_first_response(
    memories: MemoryServiceStub, project: Project
) -> None:
    seed(memories, project, "m1")
    first = update(
        memories, project, [memory_pb2.MemoryUpdate(id="m1", content="v1")], request_id="u-1"
    )
    update(memories, project, [memory_pb2.MemoryUpdate(id="m1", content="v2")])
    again = update(
        memories, project, [memory_pb2.MemoryUpdate(id="m1", content="v1")], request_id="u-1"
    )
    assert again == first
    assert get(memories, project, "m1").content == "v2"  # the retry wrote nothing
    with pytest.raises(grpc.RpcError) as caught:
        update(
            memories, project, [memory_pb2.MemoryUpdate(id="m1", content="v3")], request_id="u-1"
        )
    assert details(caught.value)[0].reason == "REQUEST_ID_REUSED"


def test_an_invalid_update_after_slices_already_sent_writes_nothing(
    memories: MemoryServiceStub, project: Project
) -> None:
    """Updates are validated and written a slice at a time, in id order: the last id's update
    is refused after the earlier slices went to PostgreSQL, which must roll them back."""
    ids = [f"m{i:03d}" for i in range(300)]
    seed(memories, project, *ids)
    updates = [memory_pb2.MemoryUpdate(id=i, importance=0.9) for i in reversed(ids)]
    updates[0].importance = 2.0  # m299: the last of the last slice
    with pytest.raises(grpc.RpcError) as caught:
        update(memories, project, updates)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = [(v.field, v.reason) for v in details(caught.value)[1].field_violations]
    assert violations == [("updates[0].importance", "OUT_OF_RANGE")]
    assert [get(memories, project, i).importance for i in ("m000", "m150", "m298")] == [
        pytest.approx(0.4)
    ] * 3


def test_outcomes_of_several_slices_come_back_in_request_order(
    memories: MemoryServiceStub, project: Project
) -> None:
    """300 ids over three slices, every other one unknown (so each slice's statement reports
    some), and a duplicate whose first copy is the last id of the first slice: each result at
    its request index."""
    ids = [f"m{i:03d}" for i in range(300)]
    seed(memories, project, *ids[::2])
    requested = [*reversed(ids), "m124"]  # the copy sorts right after m124, in the next slice
    updates = [memory_pb2.MemoryUpdate(id=i, importance=0.9) for i in requested]
    reply = update(memories, project, updates, partial_success=True)
    assert (reply.updated, reply.not_found, reply.failed) == (150, 150, 1)
    known = set(ids[::2])
    expected = [
        (n, i, common_pb2.OUTCOME_UPDATED if i in known else common_pb2.OUTCOME_NOT_FOUND)
        for n, i in enumerate(requested[:-1])
    ]
    assert [(r.index, r.id, r.outcome) for r in reply.results] == [
        *expected,
        (300, "m124", common_pb2.OUTCOME_FAILED),
    ]
    bad = error_details_pb2.BadRequest()
    assert reply.results[300].error.details[1].Unpack(bad)
    assert [(v.field, v.description, v.reason) for v in bad.field_violations] == [
        ("updates[300].id", "duplicates updates[175].id", "DUPLICATE_ID")
    ]
    assert get(memories, project, "m000").importance == pytest.approx(0.9)
