"""`zerodb-batch load interactions` and `zerodb-batch export interactions` end to end: the real
commands against the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import psycopg

from tests.api.test_memory_stream import Feed
from tests.api.test_rlhf_batch import create
from tests.api.test_rlhf_export import scored
from tests.api.test_rlhf_stream import prompts
from tests.plugins.checks import wait_for
from tests.plugins.server import Project, ServerThread
from zerodb.v1 import load_pb2, rlhf_pb2
from zerodb.v1.load_pb2_grpc import LoadServiceStub
from zerodb.v1.rlhf_pb2_grpc import RlhfServiceStub
from zerodb_batch.load_kinds import INTERACTIONS, parse_interaction
from zerodb_batch.loader import Chunking, default_load_id, read_chunks

Db = psycopg.Connection[tuple[object, ...]]


def load(
    server: ServerThread, project: Project, path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "zerodb_batch", "load", "interactions", str(path),
        "--project", project.id, "--target", server.address, *args,
    ]  # fmt: skip
    env = {**os.environ, "ZERODB_API_KEY": project.key}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def lines(path: Path, records: list[object]) -> Path:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in records))
    return path


def test_load_reports_bad_lines_and_refused_records(
    server: ServerThread, project: Project, db: Db, tmp_path: Path
) -> None:
    path = lines(
        tmp_path / "log.jsonl",
        [
            {"prompt": "Explain async/await", "response": "...", "metadata": {"model": "q"}},
            "{oops\n",
            {"prompt": "p", "reward": 3},
            {"prompt": "p", "rating": 5},
            {"prompt": "fine", "feedback": "positive", "tags": ["a"], "reward": None},
        ],
    )
    done = load(server, project, path, "--chunk-size", "2")
    assert done.returncode == 1, done.stderr
    assert "line 2: skipped: not JSON" in done.stderr
    assert "line 4: skipped: unknown field(s) rating" in done.stderr
    assert "line 3: refused: interactions[1].reward" in done.stdout
    assert "2 inserted, 0 updated, 1 refused" in done.stdout
    assert prompts(db, project) == ["Explain async/await", "fine"]


def test_a_jsonl_export_loads_back(
    server: ServerThread, rlhf: RlhfServiceStub, project: Project, tmp_path: Path
) -> None:
    item = rlhf_pb2.Interaction(
        prompt="q\n\"x\"", response="a\\b", feedback="mixed", reward=0.25, model="m",
        session_id="s", agent_id="g", human_feedback="hf", tags=["t"], context="c",
    )  # fmt: skip
    item.metadata.update({"k": {"n": [1, 2]}})
    bare = rlhf_pb2.Interaction(prompt="bare")
    request = rlhf_pb2.BatchCreateInteractionsRequest(project_id=project.id, interactions=[item])
    rlhf.BatchCreateInteractions(request, metadata=project.auth)
    request.interactions[0].CopyFrom(bare)
    rlhf.BatchCreateInteractions(request, metadata=project.auth)
    exported = tmp_path / "export.jsonl"
    assert run_export(server, project, "--output", str(exported)).returncode == 0

    copy = Project(*server.new_key())
    done = load(server, copy, exported)
    assert done.returncode == 0, done.stderr
    again = tmp_path / "again.jsonl"
    assert run_export(server, copy, "--output", str(again)).returncode == 0
    ours = [json.loads(line) for line in exported.read_text().splitlines()]
    theirs = [json.loads(line) for line in again.read_text().splitlines()]
    for row in ours + theirs:
        row.pop("id"), row.pop("create_time")
    assert sorted(theirs, key=json.dumps) == sorted(ours, key=json.dumps) and len(ours) == 2


def test_resume_loads_the_rest_once(
    server: ServerThread,
    rlhf: RlhfServiceStub,
    channel: grpc.Channel,
    project: Project,
    db: Db,
    tmp_path: Path,
) -> None:
    path = lines(tmp_path / "log.jsonl", [{"prompt": f"p{i:02d}"} for i in range(11)])
    load_id = default_load_id(path, Chunking(4), INTERACTIONS)
    feed, loads = Feed(), LoadServiceStub(channel)
    call = rlhf.StreamCreateInteractions.future(iter(feed), metadata=project.auth)
    for chunk in list(read_chunks(path, Chunking(4), parse_interaction, lambda *_: None))[:2]:
        feed.send(
            rlhf_pb2.StreamCreateInteractionsRequest(
                project_id=project.id,
                load_id=load_id,
                offset=chunk.offset,
                interactions=map(rlhf_pb2.Interaction.FromString, chunk.records),
            )
        )
    request = load_pb2.GetLoadRequest(project_id=project.id, load_id=load_id)

    def two_committed() -> bool:
        try:
            return loads.GetLoad(request, metadata=project.auth).load.last_offset == 1
        except grpc.RpcError:
            return False

    wait_for(two_committed, "two chunks to commit")
    call.cancel()  # the loader dies after its second chunk
    feed.close()
    fresh = load(server, project, path, "--chunk-size", "4")
    assert fresh.returncode == 2 and "--resume" in fresh.stderr  # the same load: not anew
    resumed = load(server, project, path, "--chunk-size", "4", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert prompts(db, project) == [f"p{i:02d}" for i in range(11)]


def run_export(
    server: ServerThread, project: Project, *args: str
) -> subprocess.CompletedProcess[str]:
    """The installed command as a user runs it, the key in the environment."""
    command = [
        sys.executable, "-m", "zerodb_batch", "export", "interactions",
        "--project", project.id, "--target", server.address, *args,
    ]  # fmt: skip
    env = {**os.environ, "ZERODB_API_KEY": project.key}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_cli_writes_a_file_or_stdout(
    rlhf: RlhfServiceStub, project: Project, server: ServerThread, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.jsonl"
    done = run_export(server, project, "--format", "trl", "--output", str(empty))
    assert done.returncode == 0, done.stderr
    assert empty.read_text() == "" and "exported 0 lines" in done.stderr

    create(rlhf, project, [scored("P", "a", feedback="positive"), scored("P", "b", reward=-1)])
    out = tmp_path / "pairs.jsonl"
    done = run_export(server, project, "--format", "trl", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"prompt": "P", "chosen": "a", "rejected": "b"}
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl", "pairs.jsonl"]

    to_stdout = run_export(server, project, "--feedback", "positive")
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert [json.loads(line)["response"] for line in to_stdout.stdout.splitlines()] == ["a"]


def test_cli_failure_leaves_no_file(server: ServerThread, project: Project, tmp_path: Path) -> None:
    out = tmp_path / "never.jsonl"
    done = run_export(server, project, "--output", str(out), "--reward-min", "5")
    assert done.returncode == 2
    assert "INVALID_ARGUMENT" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_reader_that_stops_early_gets_no_traceback(
    server: ServerThread, rlhf: RlhfServiceStub, project: Project
) -> None:
    for n in range(3):
        items = [rlhf_pb2.Interaction(prompt=f"{n}-{i}", response="y" * 2000) for i in range(1000)]
        create(rlhf, project, items)
    export = " ".join(
        [sys.executable, "-m", "zerodb_batch", "export", "interactions", "--project", project.id,
         "--target", server.address]
    )  # fmt: skip
    env = {**os.environ, "ZERODB_API_KEY": project.key}
    done = subprocess.run(
        f"set -o pipefail; {export} | head -n 1",
        shell=True, executable="/bin/bash", env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert json.loads(done.stdout)["prompt"] in {f"{n}-{i}" for n in range(3) for i in range(1000)}
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
