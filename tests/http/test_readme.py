"""The README's HTTP/JSON commands, run as printed with bash and the real curl binary.

Only the host changes (`localhost:8080` becomes the test server's door); `P` and `K` are set as
the README's first block tells the reader to. Blocks run in README order on one project, as a
reader would run them. Commands for VectorService and RlhfService answer 501 until those services
are built.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.http import Door, door_of
from tests.plugins.server import Project, ServerThread

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SECTION = README[README.index("## HTTP/JSON") : README.index("## The API")]
BLOCKS = re.findall(r"```sh\n(.*?)```", SECTION, flags=re.S)
SETUP, COMMANDS = BLOCKS[0], BLOCKS[1:]
TIMED_OUT = 28  # curl's exit status for --max-time: how the README's subscription ends


def route_of(block: str) -> str:
    method = re.search(r"-X (\w+)", block)
    path = re.search(r'"\$B(/[^"?]*)', block)
    assert path, block
    return f"{method[1] if method else 'GET'} {path[1]}"


@pytest.fixture(scope="module")
def reader(server: ServerThread) -> Door:
    return door_of(server, Project(*server.new_key()))


def run(reader: Door, block: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assignment = next(line for line in SETUP.splitlines() if line.startswith("B="))
    script = assignment.replace("http://localhost:8080", reader.root) + "\n" + block
    env = {**os.environ, "P": reader.project.id, "K": reader.project.key}
    return subprocess.run(
        ["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_every_annotated_rpc_has_a_command() -> None:
    from zerodb_batch.app import SERVICES
    from zerodb_batch.http.rules import bindings

    printed = {route_of(block) for block in COMMANDS}
    for binding in bindings(SERVICES):
        route = re.sub(r"\{(\w+)\}", "[^/]+", binding.template.split("/database", 1)[1])
        assert any(re.fullmatch(f"{binding.verb} {route}", p) for p in printed), binding.template


@pytest.mark.parametrize("block", COMMANDS, ids=route_of)
def test_command_as_printed(reader: Door, block: str, tmp_path: Path) -> None:
    done = run(reader, block, tmp_path)
    if "/events/stream" in block:
        assert done.returncode == TIMED_OUT, done.stderr
        assert "event: heartbeat" in done.stdout and "event: event" in done.stdout
        return
    assert done.returncode == 0, done.stderr
    reply: dict[str, Any] = json.loads(done.stdout)
    assert "error" not in reply, reply
    check = CHECKS.get(route_of(block))
    if check:
        check(reply)


def _upserted(reply: dict[str, Any]) -> None:
    assert (reply["inserted"], reply["ids"][0]) == (2, "mem-abc123")


def _deleted(reply: dict[str, Any]) -> None:
    assert (reply["deleted"], reply["not_found"]) == (1, 1)


def _loaded(reply: dict[str, Any]) -> None:
    assert reply["load"]["inserted"] == "3" and reply["chunks_committed"] == "2"


def _load_state(reply: dict[str, Any]) -> None:
    assert (reply["load"]["state"], reply["load"]["next_offset"]) == ("LOAD_STATE_DONE", "2")


CHECKS = {
    "POST /memory/batch/upsert": _upserted,
    "POST /memory/batch/delete": _deleted,
    "POST /memory/stream/upsert": _loaded,
    "GET /loads/notes-1": _load_state,
    "POST /events/batch": lambda r: r["published"] == 2 or pytest.fail(str(r)),
}
