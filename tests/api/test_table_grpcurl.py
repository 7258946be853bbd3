"""The README's tables walk-through, every command run as printed with bash: grpcurl and the
`zerodb-batch load rows` command against a real server.

Only the address changes (`localhost:50051` becomes the test server's); `P` and `K` are set as
the README tells the reader to. Blocks run in README order on one project.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.plugins.server import Project, ServerThread

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SECTION = README[README.index("### Tables: create") : README.index("## HTTP/JSON")]
BLOCKS = re.findall(r"```sh\n(.*?)```", SECTION, flags=re.S)


def method_of(block: str) -> str:
    found = re.search(r"TableService/(\w+)", block)
    return found[1] if found else "load rows"


def run(server: ServerThread, project: Project, block: str, cwd: Path) -> str:
    script = block.replace("localhost:50051", server.address)
    env = {
        **os.environ,
        "P": project.id,
        "K": project.key,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # grpcurl, zerodb-batch
    }
    done = subprocess.run(
        ["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (block, done.stderr)
    return done.stdout


def test_every_table_rpc_is_shown() -> None:
    from zerodb.v1 import table_pb2

    shown = {method_of(block) for block in BLOCKS}
    assert set(table_pb2.DESCRIPTOR.services_by_name["TableService"].methods_by_name) <= shown
    assert "load rows" in shown


def test_walk_through_as_printed(server: ServerThread, project: Project, tmp_path: Path) -> None:
    replies: list[tuple[str, Any]] = []
    for block in BLOCKS:
        out = run(server, project, block, tmp_path)
        method = method_of(block)
        replies.append((method, json.loads(out) if method != "load rows" else out))
    (_, created), (_, written), (_, seed), (_, streamed), (_, loaded), (_, listed), (_, gone) = (
        replies
    )
    assert created["table"]["indexed_fields"] == ["status"]
    insert, update, query, count = written["results"]
    assert (insert["inserted"], update["matched"], update["modified"]) == ("2", "1", "1")
    assert [r["row_data"] for r in query["rows"]] == [
        {"name": "scout", "runs": 3}, {"name": "critic", "runs": 1},
    ]  # fmt: skip
    assert count["count"] == "1" and written["succeeded"] == 4
    assert [r["outcome"] for r in seed["results"]] == [
        "OPERATION_OUTCOME_SUCCEEDED", "OPERATION_OUTCOME_FAILED",
    ]  # fmt: skip
    assert len(seed["results"][0]["rows"]) == 2
    assert seed["results"][1]["error"]["code"] == 5
    assert "table 'sessions' does not exist" in seed["results"][1]["error"]["message"]
    assert streamed["load"]["state"] == "LOAD_STATE_DONE" and streamed["load"]["inserted"] == "3"
    assert "2 inserted, 0 updated, 0 refused" in loaded
    assert [t["name"] for t in listed["tables"]] == ["agents"]
    assert gone["rows_deleted"] == "7"
