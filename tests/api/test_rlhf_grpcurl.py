"""The README's RLHF walk-through, each command run with grpcurl as printed there."""

from __future__ import annotations

import json

from tests.api.test_memory_grpcurl import call
from tests.plugins.serve import grpcurl
from tests.plugins.server import Project, ServerThread

RLHF = "RlhfService/"
SEED = {
    "interactions": [
        {
            "prompt": "Explain async/await",
            "response": "Async/await is a syntax for non-blocking I/O...",
            "metadata": {"model": "qwen-coder-32b"},
        },
        {
            "prompt": "What is a decorator in Python?",
            "response": "A decorator wraps a function to extend its behavior...",
            "metadata": {"model": "qwen-coder-32b"},
        },
    ]
}
RATED = {
    "request_id": "log-42",
    "interactions": [
        {"prompt": "Explain async/await", "response": "It lets a coroutine wait without blocking.",
         "feedback": "positive", "reward": 0.9, "model": "qwen-coder-32b", "session_id": "s-1",
         "agent_id": "tutor", "human_feedback": "clear and short", "tags": ["python"],
         "context": "Answer in one sentence."},
        {"prompt": "Explain async/await", "response": "Async is when code is fast.",
         "feedback": "negative", "reward": -0.6, "model": "qwen-coder-32b", "session_id": "s-1"},
    ],
}  # fmt: skip


def test_walk_through(server: ServerThread, project: Project) -> None:
    seeded = call(server, project, RLHF + "BatchCreateInteractions", SEED)
    assert seeded["created"] == 2 and len(seeded["ids"]) == 2
    assert [r["outcome"] for r in seeded["results"]] == ["OUTCOME_INSERTED"] * 2
    rated = call(server, project, RLHF + "BatchCreateInteractions", RATED)
    assert call(server, project, RLHF + "BatchCreateInteractions", RATED) == rated  # a retry

    listed = call(
        server,
        project,
        RLHF + "ListInteractions",
        {"feedback": "positive", "model": "qwen-coder-32b", "page_size": 10},
    )
    (good,) = listed["interactions"]
    assert (good["reward"], good["tags"], good["session_id"]) == (0.9, ["python"], "s-1")

    loaded = call(
        server,
        project,
        RLHF + "StreamCreateInteractions",
        {"load_id": "chat-log-1", "offset": 0,
         "interactions": [{"prompt": "Hi", "response": "Hello!", "feedback": "positive"}]},
        {"load_id": "chat-log-1", "offset": 1,
         "interactions": [{"prompt": "Hi", "response": "What?", "feedback": "negative"}]},
    )  # fmt: skip
    assert (loaded["load"]["kind"], loaded["load"]["inserted"]) == ("interactions", "2")
    assert loaded["load"]["state"] == "LOAD_STATE_DONE"

    exported = call(server, project, RLHF + "ExportInteractions", {"format": "trl"})
    pairs = sorted(json.loads(line)["chosen"] for line in exported["lines"])
    assert pairs == ["Hello!", "It lets a coroutine wait without blocking."]


def test_an_invalid_batch_shows_every_violation(server: ServerThread, project: Project) -> None:
    body = {
        "project_id": project.id,
        "interactions": [{"prompt": "p", "feedback": "great"}, {"prompt": "p", "reward": 2}],
    }
    done = grpcurl(
        "-plaintext", "-H", f"x-api-key: {project.key}", "-d", json.dumps(body),
        server.address, "zerodb.v1.RlhfService/BatchCreateInteractions",
    )  # fmt: skip
    assert done.returncode != 0
    assert "Code: InvalidArgument" in done.stdout + done.stderr
    assert "2 of 2 interactions are invalid; nothing was written" in done.stdout + done.stderr
    for field in ("interactions[0].feedback", "interactions[1].reward"):
        assert field in done.stdout + done.stderr
