"""StreamCreateInteractions and GetLoad through a real server and channel."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2

from tests.api.test_memory_stream import Feed
from tests.api.test_rlhf_batch import count, listed
from tests.plugins.checks import assert_too_large, details, last_offset, wait_for
from tests.plugins.server import Project
from zerodb.v1 import load_pb2, rlhf_pb2
from zerodb.v1.load_pb2_grpc import LoadServiceStub
from zerodb.v1.rlhf_pb2_grpc import RlhfServiceStub

Db = psycopg.Connection[tuple[object, ...]]
Request = rlhf_pb2.StreamCreateInteractionsRequest


@pytest.fixture
def loads(channel: grpc.Channel) -> LoadServiceStub:
    return LoadServiceStub(channel)


def chunk(project: Project, offset: int, n: int = 4, load_id: str = "rl-1", **kw: Any) -> Request:
    items = [
        rlhf_pb2.Interaction(prompt=f"{load_id}/{offset}/{i}", response="r", feedback="positive")
        for i in range(n)
    ]
    return Request(project_id=project.id, load_id=load_id, offset=offset, interactions=items, **kw)


def stream(
    stub: RlhfServiceStub, project: Project, requests: Iterable[Request]
) -> rlhf_pb2.StreamCreateInteractionsResponse:
    return stub.StreamCreateInteractions(iter(requests), metadata=project.auth)


def prompts(db: Db, project: Project) -> list[str]:
    rows = db.execute(
        "SELECT prompt FROM interactions WHERE project_id = %s ORDER BY prompt", (project.id,)
    ).fetchall()
    return [str(r[0]) for r in rows]


def get_load(stub: LoadServiceStub, project: Project, load_id: str = "rl-1") -> load_pb2.Load:
    request = load_pb2.GetLoadRequest(project_id=project.id, load_id=load_id)
    return stub.GetLoad(request, metadata=project.auth).load


def test_chunks_commit_as_a_load_of_interactions(
    rlhf: RlhfServiceStub, loads: LoadServiceStub, project: Project, db: Db
) -> None:
    reply = stream(rlhf, project, [chunk(project, o) for o in range(3)])
    assert (reply.chunks_committed, reply.chunks_skipped, list(reply.failures)) == (3, 0, [])
    load = reply.load
    assert (load.kind, load.state, load.next_offset, load.inserted) == (
        "interactions",
        load_pb2.LOAD_STATE_DONE,
        3,
        12,
    )
    assert get_load(loads, project) == load
    assert count(db, project) == 12


def test_cut_stream_resumed_writes_every_interaction_once(
    rlhf: RlhfServiceStub, loads: LoadServiceStub, project: Project, db: Db
) -> None:
    feed = Feed()
    call = rlhf.StreamCreateInteractions.future(iter(feed), metadata=project.auth)
    for offset in range(3):
        feed.send(chunk(project, offset))  # type: ignore[arg-type]
    wait_for(lambda: last_offset(loads, project, "rl-1") == 2 or None, "chunk 2 to commit")
    call.cancel()  # the stream breaks
    feed.close()
    load = get_load(loads, project)
    assert (load.next_offset, load.state) == (3, load_pb2.LOAD_STATE_RUNNING)

    # Resent from an earlier offset than needed: the duplicates are skipped and counted.
    reply = stream(rlhf, project, [chunk(project, o) for o in range(1, 6)])
    assert (reply.chunks_committed, reply.chunks_skipped) == (3, 2)
    assert (reply.load.inserted, reply.load.state) == (24, load_pb2.LOAD_STATE_DONE)
    assert prompts(db, project) == sorted(f"rl-1/{o}/{i}" for o in range(6) for i in range(4))


def test_an_invalid_interaction_refuses_its_chunk_unless_partial(
    rlhf: RlhfServiceStub, project: Project, db: Db
) -> None:
    bad = chunk(project, 1)
    bad.interactions[2].reward = 2.0
    with pytest.raises(grpc.RpcError) as caught:
        stream(rlhf, project, [chunk(project, 0), bad])
    assert [v.field for v in details(caught.value)[1].field_violations] == [
        "interactions[2].reward"
    ]
    assert count(db, project) == 4

    bad.partial_success = True
    bad.interactions[3].feedback = "meh"
    reply = stream(rlhf, project, [bad])
    assert [(f.offset, f.index) for f in reply.failures] == [(1, 2), (1, 3)]
    violations = error_details_pb2.BadRequest()
    assert reply.failures[1].error.details[1].Unpack(violations)
    assert violations.field_violations[0].field == "interactions[3].feedback"
    assert (reply.load.inserted, reply.load.failed) == (6, 2)
    assert count(db, project) == 6


def test_chunk_limits(rlhf: RlhfServiceStub, project: Project) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stream(rlhf, project, [chunk(project, 0, n=5001)])
    assert_too_large(caught.value, "interactions", 5000, 5001)


def test_values_round_trip_through_copy(rlhf: RlhfServiceStub, project: Project, db: Db) -> None:
    """Every character COPY's text format or an array literal treats specially, in every field."""
    nasty = rlhf_pb2.Interaction(
        prompt="line\nbreak\r\nand\ttab, \\backslash, \\N and \\.",
        response="\\N",
        feedback="negative",
        reward=-1.0,
        model="m\\1\t",
        session_id="s\n1",
        agent_id="a\\b",
        human_feedback="no\tpe\n",
        tags=['quote"d', "back\\slash", "comma,brace}{", "NULL", " padded ", "ünï😀"],
        context="ctx\\\n",
    )
    nasty.metadata.update({"path": "C:\\dir", "controls": "a\nb\tc", "uni": "ü😀", "n": 1})
    seeded = rlhf_pb2.Interaction(prompt="seed's")
    seeded.metadata.update({"model": "qwen-coder-32b"})
    sent = [nasty, seeded, rlhf_pb2.Interaction(prompt="bare", reward=0.0)]
    request = Request(project_id=project.id, load_id="awkward", offset=0, interactions=sent)
    assert stream(rlhf, project, [request]).load.inserted == 3

    got = {i.prompt: i for i in listed(rlhf, project)}
    for item in sent:
        stored = got[item.prompt]
        assert stored.id and stored.create_time.seconds
        stored.ClearField("id")
        stored.ClearField("create_time")
        expected = rlhf_pb2.Interaction()
        expected.CopyFrom(item)
        expected.metadata.SetInParent()  # always present in answers, '{}' when empty
        if not item.model and "model" in item.metadata:
            expected.model = item.metadata["model"]  # the seed's way of naming the model
        assert stored == expected
    assert got["bare"].HasField("reward") and not got["seed's"].HasField("reward")
