"""result_view: full per-item results by default, only the items not written as asked, or
counters alone; the counters are always there."""

from __future__ import annotations

import grpc

from tests.plugins.server import Project
from zerodb.v1 import common_pb2, event_pb2, memory_pb2, memory_pb2_grpc
from zerodb.v1.event_pb2_grpc import EventServiceStub

FULL, FAILURES, COUNTS = (
    common_pb2.RESULT_VIEW_FULL,
    common_pb2.RESULT_VIEW_FAILURES,
    common_pb2.RESULT_VIEW_COUNTS,
)


def test_upsert_views(memories: memory_pb2_grpc.MemoryServiceStub, project: Project) -> None:
    records = [{"id": "a"}, {"id": "b", "importance": 2}, {"content": "new"}]

    def upsert(view: int) -> memory_pb2.BatchUpsertMemoriesResponse:
        request = memory_pb2.BatchUpsertMemoriesRequest(
            project_id=project.id, records=records, partial_success=True, result_view=view
        )
        return memories.BatchUpsertMemories(request, metadata=project.auth)

    full = upsert(common_pb2.RESULT_VIEW_UNSPECIFIED)
    assert [r.outcome for r in full.results] == [
        common_pb2.OUTCOME_INSERTED,
        common_pb2.OUTCOME_FAILED,
        common_pb2.OUTCOME_INSERTED,
    ]
    assert full.results[1].id == "b"  # a refused item echoes the id it was sent with
    failures = upsert(FAILURES)
    assert [(r.index, r.id) for r in failures.results] == [(1, "b")]
    assert (failures.updated, failures.inserted, failures.failed) == (1, 1, 1)
    assert len(failures.ids) == 3 and failures.ids[1] == ""  # generated ids stay known
    counts = upsert(COUNTS)
    assert (counts.updated, counts.inserted, counts.failed) == (1, 1, 1)
    assert not counts.results and not counts.ids
    all_written = memories.BatchUpsertMemories(
        memory_pb2.BatchUpsertMemoriesRequest(
            project_id=project.id, records=[{"id": "a"}, {"id": "c"}], result_view=FAILURES
        ),
        metadata=project.auth,
    )
    assert (all_written.updated, all_written.inserted) == (1, 1)
    assert not all_written.results and list(all_written.ids) == ["a", "c"]


def test_update_and_delete_views(
    memories: memory_pb2_grpc.MemoryServiceStub, project: Project
) -> None:
    memories.BatchUpsertMemories(
        memory_pb2.BatchUpsertMemoriesRequest(
            project_id=project.id, records=[{"id": f"m{i}"} for i in range(500)]
        ),
        metadata=project.auth,
    )
    updated = memories.BatchUpdateMemories(
        memory_pb2.BatchUpdateMemoriesRequest(
            project_id=project.id,
            updates=[{"id": "m1", "importance": 0.1}, {"id": "ghost", "importance": 0.2}],
            result_view=FAILURES,
        ),
        metadata=project.auth,
    )
    assert [(r.id, r.outcome) for r in updated.results] == [("ghost", common_pb2.OUTCOME_NOT_FOUND)]
    assert (updated.updated, updated.not_found) == (1, 1)
    ids = [f"m{i}" for i in range(500)]
    deleted = memories.BatchDeleteMemories(
        memory_pb2.BatchDeleteMemoriesRequest(project_id=project.id, ids=ids, result_view=COUNTS),
        metadata=project.auth,
    )
    assert (deleted.deleted, deleted.not_found, len(deleted.results)) == (500, 0, 0)
    assert deleted.ByteSize() < 10


def test_publish_views(channel: grpc.Channel, project: Project) -> None:
    events = EventServiceStub(channel)
    request = event_pb2.BatchPublishEventsRequest(
        project_id=project.id,
        events=[{"topic": "a.b"}, {"topic": "bad topic"}],
        partial_success=True,
        result_view=FAILURES,
    )
    reply = events.BatchPublishEvents(request, metadata=project.auth)
    assert [(r.index, r.outcome) for r in reply.results] == [(1, common_pb2.OUTCOME_FAILED)]
    assert (reply.published, reply.failed) == (1, 1)
    assert reply.ids[0] and not reply.ids[1]


def test_interaction_views(channel: grpc.Channel, project: Project) -> None:
    from zerodb.v1 import rlhf_pb2, rlhf_pb2_grpc

    request = rlhf_pb2.BatchCreateInteractionsRequest(
        project_id=project.id,
        interactions=[{"prompt": "p", "response": "r"}, {"prompt": "q", "reward": 3}],
        partial_success=True,
        result_view=COUNTS,
    )
    reply = rlhf_pb2_grpc.RlhfServiceStub(channel).BatchCreateInteractions(
        request, metadata=project.auth
    )
    assert (reply.created, reply.failed, len(reply.results), len(reply.ids)) == (1, 1, 0, 0)
