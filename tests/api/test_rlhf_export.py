"""ExportInteractions: every format round-trips, pairs follow the documented rule, and a project
without interactions exports nothing."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any

import grpc
import pytest

from tests.api.test_memory_stream import connections_in_use
from tests.api.test_rlhf_batch import create, listed
from tests.plugins.checks import details, wait_for
from tests.plugins.server import Project, ServerThread
from zerodb.v1 import rlhf_pb2
from zerodb.v1.rlhf_pb2_grpc import RlhfServiceStub

FORMATS = ("jsonl", "trl", "openai", "openai-preference")
AWKWARD = 'say "hi"\n\\ back\\slash, \x07 bell, \u2028 separator, ünï 😀'


def messages(
    stub: RlhfServiceStub, project: Project, **kw: Any
) -> list[rlhf_pb2.ExportInteractionsResponse]:
    request = rlhf_pb2.ExportInteractionsRequest(project_id=project.id, **kw)
    return list(stub.ExportInteractions(request, metadata=project.auth))


def export(stub: RlhfServiceStub, project: Project, **kw: Any) -> list[dict[str, Any]]:
    """Every line of the export, each parsed as one JSON object."""
    lines = [line for m in messages(stub, project, **kw) for line in m.lines]
    assert all("\n" not in line for line in lines)
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


def scored(prompt: str, response: str, *, feedback: str = "", **kw: Any) -> rlhf_pb2.Interaction:
    return rlhf_pb2.Interaction(prompt=prompt, response=response, feedback=feedback, **kw)


def pairs(stub: RlhfServiceStub, project: Project, **kw: Any) -> Counter[tuple[str, str, str]]:
    lines = export(stub, project, format="trl", **kw)
    assert all(set(line) == {"prompt", "chosen", "rejected"} for line in lines)
    return Counter((p["prompt"], p["chosen"], p["rejected"]) for p in lines)


@pytest.mark.parametrize("format", [*FORMATS, ""])
def test_a_project_without_interactions_exports_nothing(
    rlhf: RlhfServiceStub, project: Project, format: str
) -> None:
    assert messages(rlhf, project, format=format) == []


def test_jsonl_has_every_field_oldest_first(rlhf: RlhfServiceStub, project: Project) -> None:
    full = rlhf_pb2.Interaction(
        prompt="p\n1", response="r \\ 1", feedback="positive", reward=0.5, model="m",
        session_id="s", agent_id="a", human_feedback="good", tags=["t1", "t2"],
        context="ctx",
    )  # fmt: skip
    full.metadata.update({"k": [1, "two", None], "nested": {"x": True}})
    first = create(rlhf, project, [full]).ids[0]
    second = create(rlhf, project, [rlhf_pb2.Interaction(prompt="bare")]).ids[0]
    lines = export(rlhf, project)  # jsonl is the default
    assert [line["id"] for line in lines] == [first, second]
    assert lines[0] | {"create_time": None} == {
        "id": first, "prompt": "p\n1", "response": "r \\ 1", "feedback": "positive",
        "reward": 0.5, "model": "m", "session_id": "s", "agent_id": "a",
        "human_feedback": "good", "tags": ["t1", "t2"], "context": "ctx",
        "metadata": {"k": [1, "two", None], "nested": {"x": True}}, "create_time": None,
    }  # fmt: skip
    assert lines[1] | {"id": None, "create_time": None} == {
        "id": None, "prompt": "bare", "response": "", "feedback": None, "reward": None,
        "model": None, "session_id": None, "agent_id": None, "human_feedback": None,
        "tags": [], "context": None, "metadata": {}, "create_time": None,
    }  # fmt: skip
    stored = {i.id: i for i in listed(rlhf, project)}
    for line in lines:
        assert line["create_time"].endswith("Z")
        when = datetime.fromisoformat(line["create_time"])
        assert when == stored[line["id"]].create_time.ToDatetime(tzinfo=when.tzinfo)


def test_openai_chat_lines(rlhf: RlhfServiceStub, project: Project) -> None:
    for item in [  # one call each: oldest first
        rlhf_pb2.Interaction(prompt=AWKWARD, response="a1", context="Be brief.\t"),
        rlhf_pb2.Interaction(prompt="q2", response="a2"),
        rlhf_pb2.Interaction(prompt="q3", response=""),  # nothing to learn from
    ]:
        create(rlhf, project, [item])
    assert export(rlhf, project, format="openai") == [
        {
            "messages": [
                {"role": "system", "content": "Be brief.\t"},
                {"role": "user", "content": AWKWARD},
                {"role": "assistant", "content": "a1"},
            ]
        },
        {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]},
    ]


def test_pairs_follow_the_rule(rlhf: RlhfServiceStub, project: Project) -> None:
    create(
        rlhf,
        project,
        [
            # feedback alone: positive over negative
            scored("P1", "good", feedback="positive"),
            scored("P1", "bad", feedback="negative"),
            # rewards: best with worst, second with second to last
            scored("P2", "r0.5", reward=0.5),
            scored("P2", "r0.9", reward=0.9),
            scored("P2", "r-0.3", reward=-0.3),
            scored("P2", "r0.1", reward=0.1),
            # a tie never pairs; one response gives nothing
            scored("P3", "same1", feedback="positive"),
            scored("P3", "same2", feedback="positive"),
            scored("P4", "alone", feedback="positive"),
            # mixed scores 0: below positive, above negative
            scored("P5", "mixed", feedback="mixed"),
            scored("P5", "negative", feedback="negative"),
            scored("P6", "positive", feedback="positive"),
            scored("P6", "mixed", feedback="mixed"),
            # the reward wins over the feedback
            scored("P8", "positive but -0.2", feedback="positive", reward=-0.2),
            scored("P8", "negative", feedback="negative"),
            # without a score, or with an empty response: not paired
            scored("P9", "unscored"),
            scored("P9", "negative", feedback="negative"),
            scored("P10", "", feedback="positive"),
            scored("P10", "negative", feedback="negative"),
            # the same prompt means the same text
            scored("P12", "x", feedback="positive"),
            scored("P12 ", "y", feedback="negative"),
        ],
    )
    # One call each: the earlier logged of equal scores ranks first (within a call, the id).
    for item in [
        # an odd one out in the middle stays unpaired
        scored("P7", "first+", feedback="positive"),
        scored("P7", "second+", feedback="positive"),
        scored("P7", "only-", feedback="negative"),
        # a tie in the middle: the outer pair only
        scored("P11", "a", reward=0.5),
        scored("P11", "b", reward=0.5),
        scored("P11", "c", reward=0.5),
        scored("P11", "d", reward=-1.0),
    ]:
        create(rlhf, project, [item])
    assert pairs(rlhf, project) == Counter(
        [
            ("P1", "good", "bad"),
            ("P2", "r0.9", "r-0.3"),
            ("P2", "r0.5", "r0.1"),
            ("P5", "mixed", "negative"),
            ("P6", "positive", "mixed"),
            ("P7", "first+", "only-"),
            ("P8", "positive but -0.2", "negative"),
            ("P11", "a", "d"),
        ]
    )


def test_pairs_are_made_among_the_filtered_interactions(
    rlhf: RlhfServiceStub, project: Project
) -> None:
    create(
        rlhf,
        project,
        [
            scored("P", "m1 good", feedback="positive", model="m1"),
            scored("P", "m1 bad", reward=-0.5, model="m1"),
            scored("P", "m2 worse", reward=-1.0, model="m2"),
        ],
    )
    assert pairs(rlhf, project, model="m1") == Counter([("P", "m1 good", "m1 bad")])
    assert pairs(rlhf, project) == Counter([("P", "m1 good", "m2 worse")])  # m1 bad: the middle
    assert pairs(rlhf, project, model="m2") == Counter()


def test_openai_preference_lines_carry_the_same_pairs(
    rlhf: RlhfServiceStub, project: Project
) -> None:
    create(
        rlhf,
        project,
        [
            scored("Why?", AWKWARD, feedback="positive"),
            scored("Why?", "No idea.", feedback="negative"),
            scored("How?", "Slowly.", reward=0.2),
            scored("How?", "Carefully.", reward=0.8),
        ],
    )
    lines = export(rlhf, project, format="openai-preference")
    assert sorted(lines, key=json.dumps) == sorted(
        [
            {
                "input": {"messages": [{"role": "user", "content": prompt}]},
                "preferred_output": [{"role": "assistant", "content": chosen}],
                "non_preferred_output": [{"role": "assistant", "content": rejected}],
            }
            for prompt, chosen, rejected in pairs(rlhf, project)
        ],
        key=json.dumps,
    )
    assert len(lines) == 2


def test_a_large_export_comes_in_batches_of_lines(rlhf: RlhfServiceStub, project: Project) -> None:
    text = "x" * 2000
    for n in range(3):
        items = [rlhf_pb2.Interaction(prompt=f"{n}-{i}", response=text) for i in range(1000)]
        create(rlhf, project, items)
    got = messages(rlhf, project, format="openai")
    assert len(got) > 3  # about 1 MiB of lines a message
    assert all(len("".join(m.lines)) < 2 << 20 for m in got)
    prompts = [json.loads(line)["messages"][0]["content"] for m in got for line in m.lines]
    assert sorted(prompts) == sorted(f"{n}-{i}" for n in range(3) for i in range(1000))


def test_bad_requests_refused(rlhf: RlhfServiceStub, project: Project) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        messages(rlhf, project, format="csv", feedback="great", reward_min=3)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in details(caught.value)[1].field_violations] == [
        "feedback",
        "reward_min",
        "format",
    ]


def test_projects_are_isolated(
    rlhf: RlhfServiceStub, project: Project, server: ServerThread
) -> None:
    other = Project(*server.new_key())
    create(rlhf, project, [scored("P", "a", feedback="positive"), scored("P", "b", reward=-1)])
    assert len(export(rlhf, project, format="trl")) == 1
    assert messages(rlhf, other, format="trl") == messages(rlhf, other) == []
    request = rlhf_pb2.ExportInteractionsRequest(project_id=project.id)
    with pytest.raises(grpc.RpcError) as caught:
        list(rlhf.ExportInteractions(request, metadata=other.auth))
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_an_export_the_client_leaves_gives_its_connection_back(
    rlhf: RlhfServiceStub, project: Project, server: ServerThread
) -> None:
    for n in range(3):
        items = [rlhf_pb2.Interaction(prompt=f"{n}-{i}", response="y" * 2000) for i in range(1000)]
        create(rlhf, project, items)
    request = rlhf_pb2.ExportInteractionsRequest(project_id=project.id, format="jsonl")
    call = rlhf.ExportInteractions(request, metadata=project.auth)
    assert next(call).lines  # the first message, then the client goes away
    call.cancel()
    wait_for(lambda: connections_in_use(server) == 0 or None, "the connection to go back")
    assert len(export(rlhf, project)) == 3000  # the pool's connections still serve
