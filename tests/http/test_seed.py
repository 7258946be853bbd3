"""The seed page's curl commands and its Python `requests` example, run unchanged.

seed/batch-operations.txt is ZeroDB's batch-operations page as published. Each curl command runs
with the real curl binary and the `requests` example with the real package, changed only where
a user changes them: the host (the test server's door), the `{project_id}` placeholder and the
API key.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.http import Door

SEED = (Path(__file__).parent / "seed" / "batch-operations.txt").read_text()
HOST = "https://api.ainative.studio"


def seed_curls() -> dict[str, str]:
    """The page's curl commands by the heading above each, as printed."""
    commands, heading = {}, ""
    lines = SEED.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("curl "):
            end = next(j for j in range(i, len(lines)) if lines[j].endswith("}'"))
            commands[heading] = "\n".join(lines[i : end + 1])
        elif re.fullmatch(r"Batch [A-Z][\w ]+", line.strip()):
            heading = line.strip()
    return commands


def run_curl(door: Door, title: str) -> dict[str, Any]:
    command = seed_curls()[title].replace(HOST, door.root).replace("{project_id}", door.project.id)
    env = {**os.environ, "API_KEY": door.project.key}
    done = subprocess.run(
        ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    reply: dict[str, Any] = json.loads(done.stdout)
    assert "error" not in reply, reply
    return reply


def test_the_page_has_seven_curl_commands() -> None:
    assert list(seed_curls()) == [
        "Batch Query",
        "Batch Memory Upsert",
        "Batch Memory Delete",
        "Batch Memory Update",
        "Batch Vector Upsert",
        "Batch Event Publish",
        "Batch RLHF Interactions",
    ]


def test_memory_upsert(door: Door) -> None:
    reply = run_curl(door, "Batch Memory Upsert")
    assert reply["inserted"] == 2 and reply["updated"] == 0
    assert [r["outcome"] for r in reply["results"]] == ["OUTCOME_INSERTED"] * 2


def test_memory_delete(door: Door) -> None:
    records = [{"id": i, "content": "x"} for i in ("mem-abc123", "mem-def456")]
    assert door.post("/memory/batch/upsert", {"records": records}).json()["inserted"] == 2
    reply = run_curl(door, "Batch Memory Delete")
    assert (reply["deleted"], reply["not_found"]) == (2, 1)


def test_memory_update(door: Door) -> None:
    door.post("/memory/batch/upsert", {"records": [{"id": "mem-abc123", "content": "x"}]})
    reply = run_curl(door, "Batch Memory Update")
    assert (reply["updated"], reply["not_found"]) == (1, 0)
    got = door.post("/memory/batch/get", {"ids": ["mem-abc123"]}).json()["memories"][0]
    assert (got["importance"], got["tags"]) == (0.95, ["preference", "high-priority"])


def test_event_publish(door: Door) -> None:
    reply = run_curl(door, "Batch Event Publish")
    assert reply["published"] == 2 and len(reply["ids"]) == 2


def test_batch_query(door: Door) -> None:
    for name in ("agents", "sessions"):
        created = door.post("/tables", {"name": name})
        assert created.status_code == 200, created.text
    reply = run_curl(door, "Batch Query")
    assert [r["outcome"] for r in reply["results"]] == ["OPERATION_OUTCOME_SUCCEEDED"] * 2


def test_vector_upsert(door: Door) -> None:
    reply = run_curl(door, "Batch Vector Upsert")
    assert reply["inserted"] + reply["updated"] == 1 and reply["ids"] == ["vec-001"]


def test_rlhf_interactions(door: Door) -> None:
    reply = run_curl(door, "Batch RLHF Interactions")
    assert reply["created"] == 2


def test_rlhf_takes_a_bare_array(door: Door) -> None:
    """ZeroDB's API reference sends the interactions as a bare JSON array."""
    reply = door.post("/rlhf/interactions/batch", [{"prompt": "p", "response": "r"}])
    assert reply.status_code == 200, reply.text
    assert reply.json()["created"] == 1


def test_python_example(door: Door) -> None:
    example = SEED[SEED.index("import requests") : SEED.index("Limits\n")].strip()
    example = example.replace('"your-api-key"', repr(door.project.key))
    example = example.replace('"your-project-id"', repr(door.project.id))
    example = example.replace(HOST, door.root)
    done = subprocess.run(
        [sys.executable, "-c", example], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["Upserted: 100 records", "Published: 50 events"]


@pytest.mark.parametrize("spelling", ["vector_id", "id"])
def test_vector_route_takes_both_spellings(door: Door, spelling: str) -> None:
    """The live API's `vector_id`/`vector_metadata`."""
    vector = {spelling: "v-1", "vector_embedding": [0.5] * 384, "vector_metadata": {"k": 1}}
    reply = door.post("/vectors/upsert-batch", {"vectors": [vector]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["ids"] == ["v-1"]


def test_heading_parser_sees_every_command() -> None:
    assert len(re.findall(r"^curl ", SEED, flags=re.M)) == len(seed_curls())
