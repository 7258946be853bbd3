"""`zerodb-batch load memories` end to end: the real command against the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import psycopg
import pytest

from tests.api.test_memory_stream import Feed, contents
from tests.plugins.checks import wait_for
from tests.plugins.server import Project, ServerThread
from zerodb.v1 import load_pb2, memory_pb2
from zerodb.v1.load_pb2_grpc import LoadServiceStub
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub
from zerodb_batch import cli
from zerodb_batch.domain import struct_json
from zerodb_batch.load_kinds import MEMORIES, parse_memory
from zerodb_batch.loader import Chunking, default_load_id, read_chunks

Db = psycopg.Connection[tuple[object, ...]]


def facts(path: Path, n: int, extra: dict[int, str] | None = None) -> Path:
    """n good records, one a line; `extra` puts other text at given (1-based) lines."""
    lines = [json.dumps({"content": f"fact {i}", "tags": ["cli"]}) for i in range(n)]
    for at, text in sorted((extra or {}).items()):
        lines.insert(at - 1, text)
    path.write_text("\n".join(lines) + "\n")
    return path


def load(
    server: ServerThread, project: Project, path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """The installed command as a user runs it, the key in the environment."""
    command = [
        sys.executable,
        "-m",
        "zerodb_batch",
        "load",
        "memories",
        str(path),
        "--project",
        project.id,
        "--target",
        server.address,
        *args,
    ]
    env = {**os.environ, "ZERODB_API_KEY": project.key}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_loads_a_file_reporting_bad_lines_and_refused_records(
    server: ServerThread, project: Project, db: Db, tmp_path: Path
) -> None:
    refused = json.dumps({"content": "too important", "importance": 5})
    path = facts(tmp_path / "facts.jsonl", 10, {3: "{oops", 7: refused, 9: '{"colour": 1}'})
    done = load(server, project, path, "--chunk-size", "3")
    assert done.returncode == 1, done.stderr  # loaded, but not every line
    assert "line 3: skipped: not JSON" in done.stderr
    assert "line 9: skipped: unknown field(s) colour" in done.stderr
    assert "line 7: refused: records[2].importance" in done.stdout
    assert "10 inserted, 0 updated, 1 refused" in done.stdout
    assert contents(db, project) == sorted(f"fact {i}" for i in range(10))

    again = load(server, project, path, "--chunk-size", "3")
    assert again.returncode == 2 and "--resume" in again.stderr
    assert len(contents(db, project)) == 10


def test_resume_continues_an_interrupted_load(
    server: ServerThread,
    project: Project,
    db: Db,
    tmp_path: Path,
    memories: MemoryServiceStub,
    channel: grpc.Channel,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = facts(tmp_path / "facts.jsonl", 11)
    load_id = default_load_id(path, Chunking(4), MEMORIES)
    _interrupted_run(memories, LoadServiceStub(channel), project, path, load_id)
    assert len(contents(db, project)) == 8

    with pytest.raises(SystemExit) as exited:
        cli.main(
            [
                "load",
                "memories",
                str(path),
                "--project",
                project.id,
                "--target",
                server.address,
                "--api-key",
                project.key,
                "--chunk-size",
                "4",
                "--resume",
            ]
        )
    assert exited.value.code == 0
    assert f"load {load_id}: done" in capsys.readouterr().out
    assert contents(db, project) == sorted(f"fact {i}" for i in range(11))


def test_resume_follows_the_content_not_the_path(
    server: ServerThread,
    project: Project,
    db: Db,
    tmp_path: Path,
    memories: MemoryServiceStub,
    channel: grpc.Channel,
) -> None:
    path = facts(tmp_path / "facts.jsonl", 11)
    load_id = default_load_id(path, Chunking(4), MEMORIES)
    _interrupted_run(memories, LoadServiceStub(channel), project, path, load_id)
    moved = tmp_path / "archive" / "renamed.jsonl"
    moved.parent.mkdir()
    path.rename(moved)
    fresh = load(server, project, moved, "--chunk-size", "4")
    assert fresh.returncode == 2 and "--resume" in fresh.stderr  # the same load: not anew
    resumed = load(server, project, moved, "--chunk-size", "4", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"load {load_id}: done" in resumed.stdout
    assert contents(db, project) == sorted(f"fact {i}" for i in range(11))  # each once


def test_resume_of_a_regenerated_file_is_refused(
    server: ServerThread, project: Project, db: Db, tmp_path: Path
) -> None:
    path = facts(tmp_path / "facts.jsonl", 8)
    assert load(server, project, path, "--chunk-size", "4").returncode == 0
    path.write_text("".join(json.dumps({"content": f"new {i}"}) + "\n" for i in range(10)))
    resumed = load(server, project, path, "--chunk-size", "4", "--resume")
    assert resumed.returncode == 2
    assert "nothing to resume" in resumed.stderr
    assert len(contents(db, project)) == 8  # nothing of the new file was skipped or loaded
    fresh = load(server, project, path, "--chunk-size", "4")
    assert fresh.returncode == 0, fresh.stderr
    assert len(contents(db, project)) == 18


def test_resume_with_another_chunk_size_is_refused(
    server: ServerThread,
    project: Project,
    db: Db,
    tmp_path: Path,
    memories: MemoryServiceStub,
    channel: grpc.Channel,
) -> None:
    """An explicit --load-id does not follow the chunking: the loader checks it instead."""
    path = facts(tmp_path / "facts.jsonl", 11)
    _interrupted_run(memories, LoadServiceStub(channel), project, path, "mine")  # 4 a chunk
    other = load(server, project, path, "--load-id", "mine", "--chunk-size", "3", "--resume")
    assert other.returncode == 2
    assert "holding 8 record(s), but the first 2 chunk(s)" in other.stderr
    assert len(contents(db, project)) == 8  # nothing skipped, nothing loaded
    same = load(server, project, path, "--load-id", "mine", "--chunk-size", "4", "--resume")
    assert same.returncode == 0, same.stderr
    assert contents(db, project) == sorted(f"fact {i}" for i in range(11))


def test_a_file_of_large_records_loads_in_byte_capped_chunks(
    server: ServerThread, project: Project, db: Db, tmp_path: Path
) -> None:
    """500 valid records of ~138 KiB: one 500-record chunk would pass the 64 MiB a server
    takes in one message (RESOURCE_EXHAUSTED on every try); 8 MiB chunks load."""
    record = {
        "content": "c" * 65_000,
        "metadata": {"blob": "m" * 65_000},
        "tags": [f"{t:03d}" + "t" * 125 for t in range(64)],
    }
    path = tmp_path / "big.jsonl"
    with path.open("w") as file:
        for i in range(500):
            file.write(json.dumps({**record, "id": f"big-{i}"}) + "\n")
    done = load(server, project, path)
    assert done.returncode == 0, done.stderr
    assert "500 inserted" in done.stdout
    committed = int(done.stdout.split("chunks: ")[1].split()[0])
    assert committed == 9  # 8 MiB of ~138 KiB records: 60 to a chunk
    row = db.execute(
        "SELECT count(*) FROM memories WHERE project_id = %s", (project.id,)
    ).fetchone()
    assert row == (500,)


def _interrupted_run(
    memories: MemoryServiceStub, loads: LoadServiceStub, project: Project, path: Path, load_id: str
) -> None:
    """What a loader killed after its second chunk leaves: chunks 0 and 1 committed."""
    feed = Feed()
    call = memories.StreamUpsertMemories.future(iter(feed), metadata=project.auth)
    for chunk in list(read_chunks(path, Chunking(4), parse_memory, lambda *_: None))[:2]:
        feed.send(
            memory_pb2.StreamUpsertMemoriesRequest(
                project_id=project.id,
                load_id=load_id,
                offset=chunk.offset,
                records=map(memory_pb2.Memory.FromString, chunk.records),
            )
        )
    request = load_pb2.GetLoadRequest(project_id=project.id, load_id=load_id)

    def committed() -> bool:
        try:
            return loads.GetLoad(request, metadata=project.auth).load.last_offset == 1
        except grpc.RpcError:
            return False

    wait_for(committed, "two chunks to commit")
    call.cancel()
    feed.close()


def test_metadata_goes_as_text_and_reads_back_as_the_object(
    server: ServerThread, project: Project, memories: MemoryServiceStub, tmp_path: Path
) -> None:
    """The loader sends metadata as `metadata_json`; what it stores is the line's object."""
    objects = [{"n": i, "nested": {"ok": True, "l": [1.5, "é", None]}} for i in range(7)]
    path = tmp_path / "meta.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"m{i}", "metadata": m}) + "\n" for i, m in enumerate(objects))
    )
    done = load(server, project, path, "--chunk-size", "3")
    assert done.returncode == 0, done.stderr
    request = memory_pb2.BatchGetMemoriesRequest(project_id=project.id, ids=["m0", "m6"])
    got = memories.BatchGetMemories(request, metadata=project.auth).memories
    assert [struct_json.to_dict(m.metadata) for m in got] == [objects[0], objects[6]]
