"""ListInteractions through a real server and channel: filters, order, keyset pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from tests.api.test_rlhf_batch import create
from tests.plugins.checks import details
from tests.plugins.server import Project
from zerodb.v1 import rlhf_pb2
from zerodb.v1.rlhf_pb2_grpc import RlhfServiceStub


def page(stub: RlhfServiceStub, project: Project, **kw: Any) -> rlhf_pb2.ListInteractionsResponse:
    request = rlhf_pb2.ListInteractionsRequest(project_id=project.id, **kw)
    return stub.ListInteractions(request, metadata=project.auth)


def prompts(stub: RlhfServiceStub, project: Project, **kw: Any) -> set[str]:
    return {i.prompt for i in page(stub, project, **kw).interactions}


def stamp(when: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts


def logged(stub: RlhfServiceStub, project: Project, prefix: str, n: int) -> list[str]:
    reply = create(stub, project, [rlhf_pb2.Interaction(prompt=f"{prefix}{i}") for i in range(n)])
    return list(reply.ids)


def test_pages_return_every_row_once_newest_first_while_inserts_happen(
    rlhf: RlhfServiceStub, project: Project
) -> None:
    # Rows of one batch share a create_time: the id breaks the tie inside the keyset.
    original = [i for n in range(4) for i in logged(rlhf, project, f"b{n}-", 6)]
    seen: list[rlhf_pb2.Interaction] = []
    token = ""
    for n in range(20):
        reply = page(rlhf, project, page_size=5, page_token=token)
        seen.extend(reply.interactions)
        logged(rlhf, project, f"new{n}-", 3)  # newer than every page already read
        token = reply.next_page_token
        if not token:
            break
    ids = [i.id for i in seen]
    assert sorted(ids) == sorted(original) and len(ids) == len(set(ids))
    keys = [(i.create_time.ToDatetime(), i.id) for i in seen]
    assert keys == sorted(keys, reverse=True)


def test_default_page_is_100_and_the_last_page_has_no_token(
    rlhf: RlhfServiceStub, project: Project
) -> None:
    logged(rlhf, project, "p", 101)
    first = page(rlhf, project)
    assert len(first.interactions) == 100 and first.next_page_token
    last = page(rlhf, project, page_token=first.next_page_token)
    assert len(last.interactions) == 1 and last.next_page_token == ""
    assert len(page(rlhf, project, page_size=1001).interactions) == 101  # coerced to 1000


def test_filters(rlhf: RlhfServiceStub, project: Project) -> None:
    create(
        rlhf,
        project,
        [
            rlhf_pb2.Interaction(prompt="a", feedback="positive", reward=0.9, model="m1",
                                 session_id="s1", agent_id="g1", tags=["x", "y"]),
            rlhf_pb2.Interaction(prompt="b", feedback="negative", reward=-0.5, model="m2",
                                 session_id="s1", agent_id="g2", tags=["y"]),
            rlhf_pb2.Interaction(prompt="c", feedback="mixed", model="m1", session_id="s2",
                                 tags=["z"]),
            rlhf_pb2.Interaction(prompt="d"),
        ],
    )  # fmt: skip
    assert prompts(rlhf, project) == {"a", "b", "c", "d"}
    assert prompts(rlhf, project, feedback="positive") == {"a"}
    assert prompts(rlhf, project, model="m1") == {"a", "c"}
    assert prompts(rlhf, project, session_id="s1") == {"a", "b"}
    assert prompts(rlhf, project, agent_id="g2") == {"b"}
    assert prompts(rlhf, project, tags=["x", "z"]) == {"a", "c"}  # any of them
    assert prompts(rlhf, project, reward_min=0.0) == {"a"}  # no reward: never in a range
    assert prompts(rlhf, project, reward_max=0.9) == {"a", "b"}
    assert prompts(rlhf, project, reward_min=-0.5, reward_max=-0.5) == {"b"}
    assert prompts(rlhf, project, model="m1", session_id="s1", tags=["y"]) == {"a"}
    assert prompts(rlhf, project, model="nope") == set()


def test_time_range(rlhf: RlhfServiceStub, project: Project) -> None:
    logged(rlhf, project, "t", 2)
    now, hour = datetime.now(UTC), timedelta(hours=1)
    assert len(prompts(rlhf, project, start_time=stamp(now - hour))) == 2
    assert prompts(rlhf, project, start_time=stamp(now + hour)) == set()
    assert prompts(rlhf, project, end_time=stamp(now - hour)) == set()
    both = prompts(rlhf, project, start_time=stamp(now - hour), end_time=stamp(now + hour))
    assert len(both) == 2


def test_invalid_filters_listed(rlhf: RlhfServiceStub, project: Project) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        page(
            rlhf,
            project,
            feedback="great",
            model="m" * 257,
            session_id="s" * 129,
            tags=[""],
            reward_min=0.5,
            reward_max=-2,
            start_time=timestamp_pb2.Timestamp(seconds=2000),
            end_time=timestamp_pb2.Timestamp(seconds=1000),
            page_size=-1,
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.reason) for v in details(caught.value)[1].field_violations] == [
        ("feedback", "INVALID_VALUE"),
        ("model", "TOO_LONG"),
        ("session_id", "TOO_LONG"),
        ("tags[0]", "REQUIRED"),
        ("reward_max", "OUT_OF_RANGE"),
        ("reward_max", "INVALID_RANGE"),
        ("end_time", "INVALID_RANGE"),
        ("page_size", "OUT_OF_RANGE"),
    ]


def test_page_tokens_checked(rlhf: RlhfServiceStub, project: Project) -> None:
    logged(rlhf, project, "p", 3)
    token = page(rlhf, project, page_size=1).next_page_token
    assert len(page(rlhf, project, page_size=2, page_token=token).interactions) == 2
    with pytest.raises(grpc.RpcError) as mismatch:
        page(rlhf, project, page_size=1, page_token=token, feedback="positive")
    assert details(mismatch.value)[0].reason == "PAGE_TOKEN_MISMATCH"
    with pytest.raises(grpc.RpcError) as forged:
        page(rlhf, project, page_token=token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
    assert details(forged.value)[0].reason == "PAGE_TOKEN_INVALID"
