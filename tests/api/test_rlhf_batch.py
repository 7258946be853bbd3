"""BatchCreateInteractions through a real server and channel, read back with ListInteractions."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import psycopg
import pytest
from google.rpc import code_pb2, error_details_pb2

from tests.plugins.checks import assert_too_large, details
from tests.plugins.server import Project, ServerThread
from zerodb.v1 import common_pb2, rlhf_pb2
from zerodb.v1.rlhf_pb2_grpc import RlhfServiceStub

Db = psycopg.Connection[tuple[object, ...]]
MIB = 1 << 20


def seed() -> list[rlhf_pb2.Interaction]:
    """The seed's two interactions, their model given only in metadata."""
    out = []
    for prompt, response in [
        ("Explain async/await", "Async/await is a syntax for non-blocking I/O..."),
        (
            "What is a decorator in Python?",
            "A decorator wraps a function to extend its behavior...",
        ),
    ]:
        interaction = rlhf_pb2.Interaction(prompt=prompt, response=response)
        interaction.metadata.update({"model": "qwen-coder-32b"})
        out.append(interaction)
    return out


def create(
    stub: RlhfServiceStub, project: Project, items: list[rlhf_pb2.Interaction], **kw: Any
) -> rlhf_pb2.BatchCreateInteractionsResponse:
    request = rlhf_pb2.BatchCreateInteractionsRequest(
        project_id=project.id, interactions=items, **kw
    )
    return stub.BatchCreateInteractions(request, metadata=project.auth)


def listed(stub: RlhfServiceStub, project: Project, **kw: Any) -> list[rlhf_pb2.Interaction]:
    request = rlhf_pb2.ListInteractionsRequest(project_id=project.id, page_size=1000, **kw)
    return list(stub.ListInteractions(request, metadata=project.auth).interactions)


def count(db: Db, project: Project) -> int:
    row = db.execute(
        "SELECT count(*) FROM interactions WHERE project_id = %s", (project.id,)
    ).fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


def fields(err: grpc.RpcError) -> list[tuple[str, str]]:
    return [(v.field, v.reason) for v in details(err)[1].field_violations]


def test_seed_body_logs_and_reads_back(rlhf: RlhfServiceStub, project: Project) -> None:
    reply = create(rlhf, project, seed())
    assert (reply.created, reply.failed) == (2, 0)
    assert [r.outcome for r in reply.results] == [common_pb2.OUTCOME_INSERTED] * 2
    assert [r.index for r in reply.results] == [0, 1]
    assert list(reply.ids) == [r.id for r in reply.results]
    assert all(uuid.UUID(i).version == 4 for i in reply.ids)

    got = {i.id: i for i in listed(rlhf, project)}
    assert set(got) == set(reply.ids)
    first = got[reply.ids[0]]
    assert (first.prompt, first.model) == ("Explain async/await", "qwen-coder-32b")
    assert dict(first.metadata) == {"model": "qwen-coder-32b"}
    assert not first.HasField("reward") and first.feedback == ""
    assert first.create_time.seconds > 0


def test_every_field_round_trips(rlhf: RlhfServiceStub, project: Project) -> None:
    sent = rlhf_pb2.Interaction(
        prompt="line one\nline two\twith a tab and a \\backslash",
        response="ünï😀 response",
        feedback="mixed",
        reward=-0.25,
        model="gpt-x",
        session_id="s-1",
        agent_id="a-1",
        human_feedback="too long,\nbut right",
        tags=["rlhf", 'quote"d'],
        context="You are terse.",
    )
    sent.metadata.update({"model": "ignored: model is set", "n": 3, "nested": {"ok": True}})
    reply = create(rlhf, project, [sent])
    (got,) = listed(rlhf, project)
    expected = rlhf_pb2.Interaction()
    expected.CopyFrom(sent)
    expected.id = reply.ids[0]
    got.ClearField("create_time")
    assert got == expected


def test_model_taken_from_metadata_only_when_unset_and_a_string(
    rlhf: RlhfServiceStub, project: Project
) -> None:
    number = rlhf_pb2.Interaction(prompt="p")
    number.metadata.update({"model": 7})
    too_long = rlhf_pb2.Interaction(prompt="p")
    too_long.metadata.update({"model": "m" * 257})
    with pytest.raises(grpc.RpcError) as caught:
        create(rlhf, project, [number, too_long])
    assert fields(caught.value) == [("interactions[1].metadata.model", "TOO_LONG")]

    reply = create(rlhf, project, [number])
    (got,) = listed(rlhf, project)
    assert (got.id, got.model) == (reply.ids[0], "")


def test_1000_accepted_1001_refused(rlhf: RlhfServiceStub, project: Project, db: Db) -> None:
    items = [rlhf_pb2.Interaction(prompt=f"p{i}", response="r") for i in range(1001)]
    with pytest.raises(grpc.RpcError) as caught:
        create(rlhf, project, items)
    assert_too_large(caught.value, "interactions", 1000, 1001)
    assert count(db, project) == 0
    reply = create(rlhf, project, items[:1000])
    assert reply.created == 1000 and len(set(reply.ids)) == 1000
    assert count(db, project) == 1000


def test_empty_batch_refused(rlhf: RlhfServiceStub, project: Project) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        create(rlhf, project, [])
    assert fields(caught.value) == [("interactions", "EMPTY_BATCH")]


def test_atomic_batch_lists_every_violation_and_writes_nothing(
    rlhf: RlhfServiceStub, project: Project, db: Db
) -> None:
    items = [
        rlhf_pb2.Interaction(prompt="fine", feedback="positive", reward=1.0),
        rlhf_pb2.Interaction(prompt="p", feedback="great"),
        rlhf_pb2.Interaction(prompt="p", reward=1.5),
        rlhf_pb2.Interaction(prompt="p", reward=float("nan")),
        rlhf_pb2.Interaction(response="no prompt", tags=[""]),
        rlhf_pb2.Interaction(prompt="p", session_id="s" * 129, human_feedback="\x00"),
    ]
    with pytest.raises(grpc.RpcError) as caught:
        create(rlhf, project, items)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "5 of 6 interactions are invalid; nothing was written" in (caught.value.details() or "")
    assert fields(caught.value) == [
        ("interactions[1].feedback", "INVALID_VALUE"),
        ("interactions[2].reward", "OUT_OF_RANGE"),
        ("interactions[3].reward", "OUT_OF_RANGE"),
        ("interactions[4].prompt", "REQUIRED"),
        ("interactions[4].tags[0]", "REQUIRED"),
        ("interactions[5].session_id", "TOO_LONG"),
        ("interactions[5].human_feedback", "INVALID_CHARACTER"),
    ]
    assert count(db, project) == 0


def test_partial_success_reports_each_failure(
    rlhf: RlhfServiceStub, project: Project, db: Db
) -> None:
    items = [
        rlhf_pb2.Interaction(prompt="a", reward=-1.0),
        rlhf_pb2.Interaction(prompt="b", reward=-1.01),
        rlhf_pb2.Interaction(prompt="c", feedback="negative"),
        rlhf_pb2.Interaction(prompt="d", feedback="POSITIVE"),
    ]
    reply = create(rlhf, project, items, partial_success=True)
    assert (reply.created, reply.failed) == (2, 2)
    outcomes = [r.outcome for r in reply.results]
    assert outcomes == [common_pb2.OUTCOME_INSERTED, common_pb2.OUTCOME_FAILED] * 2
    assert [bool(i) for i in reply.ids] == [True, False, True, False]
    bad = error_details_pb2.BadRequest()
    assert reply.results[1].error.code == code_pb2.INVALID_ARGUMENT
    assert reply.results[1].error.details[1].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["interactions[1].reward"]
    assert reply.results[3].error.details[1].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["interactions[3].feedback"]
    assert sorted(i.prompt for i in listed(rlhf, project)) == ["a", "c"]
    assert count(db, project) == 2


@pytest.mark.parametrize("name", ["prompt", "response", "context"])
def test_texts_at_their_cap_accepted_one_byte_over_refused(
    rlhf: RlhfServiceStub, project: Project, name: str
) -> None:
    at_cap = "é" * (MIB // 2)  # 1 MiB of UTF-8 in half as many characters
    over = at_cap[:-1] + "abc"  # one byte more, in more characters too
    items = [rlhf_pb2.Interaction(**{"prompt": "p", name: at_cap})]
    assert create(rlhf, project, items).created == 1
    items = [rlhf_pb2.Interaction(prompt="p"), rlhf_pb2.Interaction(**{"prompt": "p", name: over})]
    reply = create(rlhf, project, items, partial_success=True)
    assert (reply.created, reply.failed) == (1, 1)
    bad = error_details_pb2.BadRequest()
    assert reply.results[1].error.details[1].Unpack(bad)
    violation = bad.field_violations[0]
    assert (violation.field, violation.reason) == (f"interactions[1].{name}", "TOO_LONG")
    assert "at most 1048576 bytes" in violation.description
    stored = [i for i in listed(rlhf, project) if len(getattr(i, name)) == MIB // 2]
    assert len(stored) == 1 and getattr(stored[0], name) == at_cap


def test_other_caps(rlhf: RlhfServiceStub, project: Project) -> None:
    items = [
        rlhf_pb2.Interaction(prompt="p", model="m" * 256, human_feedback="h" * 65536),
        rlhf_pb2.Interaction(prompt="p", model="m" * 257, human_feedback="h" * 65537),
        rlhf_pb2.Interaction(prompt="p", tags=["t"] * 65),
    ]
    with pytest.raises(grpc.RpcError) as caught:
        create(rlhf, project, items)
    assert fields(caught.value) == [
        ("interactions[1].model", "TOO_LONG"),
        ("interactions[1].human_feedback", "TOO_LONG"),
        ("interactions[2].tags", "TOO_MANY"),
    ]


def test_request_id_retry_writes_nothing_new(
    rlhf: RlhfServiceStub, project: Project, db: Db
) -> None:
    first = create(rlhf, project, seed(), request_id="log-1")
    again = create(rlhf, project, seed(), request_id="log-1")
    assert again == first  # the same ids: the first response, replayed
    assert count(db, project) == 2
    with pytest.raises(grpc.RpcError) as caught:
        create(rlhf, project, seed()[:1], request_id="log-1")
    assert details(caught.value)[0].reason == "REQUEST_ID_REUSED"
    assert count(db, project) == 2


def test_projects_are_isolated(
    rlhf: RlhfServiceStub, project: Project, server: ServerThread, db: Db
) -> None:
    other = Project(*server.new_key())
    create(rlhf, project, seed())
    assert listed(rlhf, other) == []
    foreign = rlhf_pb2.BatchCreateInteractionsRequest(project_id=project.id, interactions=seed())
    with pytest.raises(grpc.RpcError) as caught:
        rlhf.BatchCreateInteractions(foreign, metadata=other.auth)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as peeking:
        rlhf.ListInteractions(
            rlhf_pb2.ListInteractionsRequest(project_id=project.id), metadata=other.auth
        )
    assert peeking.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert count(db, project) == 2 and count(db, other) == 0


def test_an_invalid_interaction_in_a_late_slice_writes_nothing(
    rlhf: RlhfServiceStub, project: Project, db: Db
) -> None:
    """Slices are inserted while later ones are validated; the transaction still rolls back."""
    items = [rlhf_pb2.Interaction(prompt=f"p{i}") for i in range(1000)]
    items[900].reward = 9
    with pytest.raises(grpc.RpcError) as caught:
        create(rlhf, project, items)
    assert fields(caught.value) == [("interactions[900].reward", "OUT_OF_RANGE")]
    assert count(db, project) == 0

    reply = create(rlhf, project, items, partial_success=True)
    assert (reply.created, reply.failed) == (999, 1)
    assert [r.index for r in reply.results] == list(range(1000))
    assert reply.ids[900] == "" and len(set(reply.ids)) == 1000
    by_id = {i.id: i.prompt for i in listed(rlhf, project)}
    assert all(by_id[reply.ids[i]] == f"p{i}" for i in range(1000) if i != 900)


def test_ids_and_times_sent_are_ignored(rlhf: RlhfServiceStub, project: Project) -> None:
    sent = rlhf_pb2.Interaction(prompt="p", id="mine")
    sent.create_time.FromSeconds(86400)
    reply = create(rlhf, project, [sent, sent])
    assert "mine" not in reply.ids and len(set(reply.ids)) == 2
    assert all(i.create_time.seconds > 86400 for i in listed(rlhf, project))
