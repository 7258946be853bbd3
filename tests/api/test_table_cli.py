"""`zerodb-batch load rows TABLE FILE` end to end: the real command against the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
from google.protobuf import struct_pb2

from tests.api.test_memory_stream import Feed
from tests.plugins.checks import wait_for
from tests.plugins.server import Project, ServerThread
from tests.plugins.tables import batch, create_table, rows_of
from zerodb.v1 import load_pb2, table_pb2
from zerodb.v1.load_pb2_grpc import LoadServiceStub
from zerodb.v1.table_pb2_grpc import TableServiceStub
from zerodb_batch.load_kinds import ROWS, parse_row
from zerodb_batch.loader import Chunking, default_load_id, read_chunks


def rows_file(path: Path, n: int, extra: dict[int, str] | None = None) -> Path:
    """n rows, one a line; `extra` puts other text at given (1-based) lines."""
    lines = [json.dumps({"n": i, "profile": {"tags": ["cli"], "ok": True}}) for i in range(n)]
    for at, text in sorted((extra or {}).items()):
        lines.insert(at - 1, text)
    path.write_text("\n".join(lines) + "\n")
    return path


def load(
    server: ServerThread, project: Project, table: str, path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "zerodb_batch", "load", "rows", table, str(path),
               "--project", project.id, "--target", server.address, *args]  # fmt: skip
    env = {**os.environ, "ZERODB_API_KEY": project.key}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def numbers(stub: TableServiceStub, project: Project, table: str) -> list[int]:
    op = {"table": table, "sort": {"n": 1}, "limit": 1000}
    return [row["n"] for row in rows_of(batch(stub, project, {"operations": [op]}).results[0])]


def test_loads_a_file_into_a_table_reporting_bad_lines_and_refused_rows(
    server: ServerThread, table_service: TableServiceStub, project: Project, tmp_path: Path
) -> None:
    create_table(table_service, project, "facts", "n")
    path = rows_file(tmp_path / "rows.jsonl", 10, {3: "[1, 2]", 7: '{"n": NaN}'})
    done = load(server, project, "facts", path, "--chunk-size", "3")
    assert done.returncode == 1, done.stderr  # loaded, but not every line
    assert "line 3: skipped: not a JSON object" in done.stderr
    assert "line 7: refused: rows[2]: numbers must be finite" in done.stdout
    assert "10 inserted, 0 updated, 1 refused" in done.stdout
    assert numbers(table_service, project, "facts") == list(range(10))
    stored = rows_of(batch(table_service, project, {"operations": [{"table": "facts"}]}).results[0])
    assert stored[0] == {"n": 0, "profile": {"tags": ["cli"], "ok": True}}

    # The table is part of the default load id: the same file into another table is a new load.
    create_table(table_service, project, "copy")
    again = load(server, project, "copy", path, "--chunk-size", "3")
    assert again.returncode == 1 and "10 inserted" in again.stdout
    assert default_load_id(path, Chunking(3), ROWS, {"table": "facts"}) != default_load_id(
        path, Chunking(3), ROWS, {"table": "copy"}
    )


def test_an_unknown_table_stops_the_load(
    server: ServerThread, project: Project, tmp_path: Path
) -> None:
    done = load(server, project, "nope", rows_file(tmp_path / "rows.jsonl", 3))
    assert done.returncode == 2
    assert "NOT_FOUND: table 'nope' does not exist" in done.stderr


def test_resume_continues_an_interrupted_load(
    server: ServerThread,
    table_service: TableServiceStub,
    channel: grpc.Channel,
    project: Project,
    tmp_path: Path,
) -> None:
    create_table(table_service, project, "facts")
    path = rows_file(tmp_path / "rows.jsonl", 11)
    load_id = default_load_id(path, Chunking(4), ROWS, {"table": "facts"})
    feed = Feed()
    call = table_service.StreamInsertRows.future(iter(feed), metadata=project.auth)
    for chunk in list(read_chunks(path, Chunking(4), parse_row, lambda *_: None))[:2]:
        feed.send(
            table_pb2.StreamInsertRowsRequest(  # type: ignore[arg-type]
                project_id=project.id, load_id=load_id, offset=chunk.offset, table="facts",
                rows=map(struct_pb2.Struct.FromString, chunk.records),
            )
        )  # fmt: skip
    loads = LoadServiceStub(channel)
    request = load_pb2.GetLoadRequest(project_id=project.id, load_id=load_id)
    wait_for(lambda: _committed(loads, request, project) == 2, "two chunks to commit")
    call.cancel()
    feed.close()

    resumed = load(server, project, "facts", path, "--chunk-size", "4", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"load {load_id}: done" in resumed.stdout
    assert numbers(table_service, project, "facts") == list(range(11))  # each row once


def _committed(loads: LoadServiceStub, request: load_pb2.GetLoadRequest, project: Project) -> int:
    try:
        return loads.GetLoad(request, metadata=project.auth).load.next_offset
    except grpc.RpcError:
        return 0
