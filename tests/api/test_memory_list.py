"""ListMemories through a real server and channel: filters, order, keyset pages."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2

from tests.api.test_memory_upsert import upsert
from tests.plugins.checks import details
from tests.plugins.server import Project
from zerodb.v1 import memory_pb2
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub


def page(
    stub: MemoryServiceStub, project: Project, **kw: object
) -> memory_pb2.ListMemoriesResponse:
    request = memory_pb2.ListMemoriesRequest(project_id=project.id, **kw)
    return stub.ListMemories(request, metadata=project.auth)


def batch(stub: MemoryServiceStub, project: Project, prefix: str, n: int) -> list[str]:
    ids = [f"{prefix}-{i:02d}" for i in range(n)]
    upsert(stub, project, [memory_pb2.Memory(id=i, content=i) for i in ids])
    return ids


def test_pages_return_every_row_once_while_inserts_happen(
    memories: MemoryServiceStub, project: Project
) -> None:
    # Rows of one batch share a create_time: the id breaks the tie inside the keyset.
    original = [i for n in range(4) for i in batch(memories, project, f"b{n}", 6)]
    seen: list[memory_pb2.Memory] = []
    token = ""
    for n in range(20):
        reply = page(memories, project, page_size=5, page_token=token)
        seen.extend(reply.memories)
        batch(memories, project, f"new{n}", 3)  # newer than every page already read
        token = reply.next_page_token
        if not token:
            break
    ids = [m.id for m in seen]
    assert sorted(ids) == sorted(original) and len(ids) == len(set(ids))
    keys = [(m.create_time.ToDatetime(), m.id) for m in seen]
    assert keys == sorted(keys, reverse=True)


def test_newest_first_and_last_page_has_no_token(
    memories: MemoryServiceStub, project: Project
) -> None:
    older = batch(memories, project, "old", 2)
    newer = batch(memories, project, "new", 2)
    reply = page(memories, project)
    assert [m.id for m in reply.memories] == newer[::-1] + older[::-1]
    assert reply.next_page_token == ""
    exact = page(memories, project, page_size=4)
    assert len(exact.memories) == 4 and exact.next_page_token == ""


def test_filters(memories: MemoryServiceStub, project: Project) -> None:
    upsert(
        memories,
        project,
        [
            memory_pb2.Memory(
                id="a",
                memory_type="semantic",
                importance=0.9,
                tags=["x", "y"],
                session_id="s1",
                agent_id="ag1",
                entity_id="e1",
            ),
            memory_pb2.Memory(
                id="b",
                memory_type="working",
                importance=0.2,
                tags=["x"],
                session_id="s2",
                agent_id="ag1",
            ),
            memory_pb2.Memory(id="c", memory_type="semantic", importance=0.5, tags=["z"]),
        ],
    )

    def ids(**kw: object) -> set[str]:
        return {m.id for m in page(memories, project, **kw).memories}

    assert ids(memory_type="semantic") == {"a", "c"}
    assert ids(tags=["y", "z"]) == {"a", "c"}
    assert ids(tags=["x", "y"], tag_match=memory_pb2.TAG_MATCH_ALL) == {"a"}
    assert ids(session_id="s2") == {"b"}
    assert ids(agent_id="ag1") == {"a", "b"}
    assert ids(entity_id="e1") == {"a"}
    assert ids(min_importance=0.5) == {"a", "c"}
    assert ids(memory_type="semantic", min_importance=0.6, tags=["x"]) == {"a"}


def test_time_range(memories: MemoryServiceStub, project: Project) -> None:
    batch(memories, project, "m", 2)
    now = datetime.now(UTC)

    def stamp(when: datetime) -> timestamp_pb2.Timestamp:
        ts = timestamp_pb2.Timestamp()
        ts.FromDatetime(when)
        return ts

    hour = timedelta(hours=1)
    assert len(page(memories, project, start_time=stamp(now - hour)).memories) == 2
    assert len(page(memories, project, start_time=stamp(now + hour)).memories) == 0
    assert len(page(memories, project, end_time=stamp(now - hour)).memories) == 0
    both = page(memories, project, start_time=stamp(now - hour), end_time=stamp(now + hour))
    assert len(both.memories) == 2


def test_page_size_limits(memories: MemoryServiceStub, project: Project) -> None:
    batch(memories, project, "m", 3)
    assert len(page(memories, project, page_size=1001).memories) == 3  # coerced to 1000
    with pytest.raises(grpc.RpcError) as caught:
        page(memories, project, page_size=-1)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1].field_violations[0].field == "page_size"


def test_invalid_filters_listed(memories: MemoryServiceStub, project: Project) -> None:
    start = timestamp_pb2.Timestamp(seconds=2000)
    with pytest.raises(grpc.RpcError) as caught:
        page(
            memories,
            project,
            memory_type="forever",
            min_importance=1.5,
            tags=[""],
            start_time=start,
            end_time=timestamp_pb2.Timestamp(seconds=1000),
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in details(caught.value)[1].field_violations] == [
        "memory_type",
        "tags[0]",
        "min_importance",
        "end_time",
    ]


@pytest.mark.parametrize(
    "token",
    [
        "nonsense",
        "e30",
        base64.urlsafe_b64encode(json.dumps({"t": "x", "id": 1, "q": ""}).encode()).decode(),
    ],
)
def test_invalid_page_token(memories: MemoryServiceStub, project: Project, token: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        page(memories, project, page_token=token)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    info, bad = details(caught.value)
    assert info.reason == "PAGE_TOKEN_INVALID"
    assert bad.field_violations[0].field == "page_token"


@pytest.mark.parametrize(
    "position",
    [
        [0, "a\x00b"],  # PostgreSQL text cannot hold NUL
        [0, "\ud800"],  # nor a lone surrogate (not UTF-8)
        [10**30, "m"],  # past year 9999
        [True, "m"],
    ],
)
def test_token_with_a_position_of_our_choosing_refused_not_internal(
    memories: MemoryServiceStub, project: Project, position: list[object]
) -> None:
    """Tokens are signed: a position swapped into a genuine token never reaches a query."""
    batch(memories, project, "m", 2)
    body, _, tag = page(memories, project, page_size=1).next_page_token.partition(".")
    query = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))[0]
    swapped = base64.urlsafe_b64encode(json.dumps([query, *position]).encode()).decode()
    with pytest.raises(grpc.RpcError) as caught:
        page(memories, project, page_token=f"{swapped.rstrip('=')}.{tag}")
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[0].reason == "PAGE_TOKEN_INVALID"


def test_page_token_of_other_filters_refused(memories: MemoryServiceStub, project: Project) -> None:
    batch(memories, project, "m", 3)
    token = page(memories, project, page_size=1).next_page_token
    assert page(memories, project, page_size=2, page_token=token).memories  # size may change
    with pytest.raises(grpc.RpcError) as caught:
        page(memories, project, page_size=1, page_token=token, memory_type="working")
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[0].reason == "PAGE_TOKEN_MISMATCH"
