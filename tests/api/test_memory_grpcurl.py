"""The README's grpcurl walk-through of update, delete, list and a streamed upsert from stdin."""

from __future__ import annotations

import json
from typing import Any

from tests.plugins.serve import grpcurl
from tests.plugins.server import Project, ServerThread


def call(server: ServerThread, project: Project, method: str, *bodies: dict[str, Any]) -> Any:
    """`grpcurl -d @` with the bodies on stdin, one JSON object per message (as the README)."""
    stdin = "\n".join(json.dumps({"project_id": project.id, **body}) for body in bodies)
    done = grpcurl(
        "-plaintext",
        "-H",
        f"x-api-key: {project.key}",
        "-d",
        "@",
        server.address,
        f"zerodb.v1.{method}",
        data=stdin,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_walk_through(server: ServerThread, project: Project) -> None:
    memories = "MemoryService/"
    call(
        server,
        project,
        memories + "BatchUpsertMemories",
        {
            "records": [
                {
                    "id": "mem-abc123",
                    "content": "User prefers concise responses",
                    "memory_type": "semantic",
                    "importance": 0.8,
                    "tags": ["preference"],
                    "session_id": "s1",
                }
            ]
        },
    )

    updated = call(
        server,
        project,
        memories + "BatchUpdateMemories",
        {
            "updates": [
                {"id": "mem-abc123", "importance": 0.95, "tags": ["preference", "high-priority"]},
                {"id": "mem-def456", "importance": 0.1},
            ]
        },
    )
    assert (updated["updated"], updated["not_found"]) == (1, 1)
    assert updated["results"][1]["outcome"] == "OUTCOME_NOT_FOUND"
    masked = call(
        server,
        project,
        memories + "BatchUpdateMemories",
        {"update_mask": {"paths": ["session_id"]}, "updates": [{"id": "mem-abc123"}]},
    )
    assert masked["updated"] == 1

    loaded = call(
        server,
        project,
        memories + "StreamUpsertMemories",
        {
            "load_id": "notes-1",
            "offset": 0,
            "records": [{"content": "likes tea"}, {"content": "lives in Lyon", "tags": ["home"]}],
        },
        {
            "load_id": "notes-1",
            "offset": 1,
            "records": [{"content": "works remotely"}],
            "final": True,
        },
    )
    assert loaded["load"]["state"] == "LOAD_STATE_DONE"
    assert (loaded["load"]["next_offset"], loaded["load"]["inserted"]) == ("2", "3")
    status = call(server, project, "LoadService/GetLoad", {"load_id": "notes-1"})
    assert status["load"]["last_offset"] == "1"

    first = call(server, project, memories + "ListMemories", {"page_size": 2})
    rest = call(
        server,
        project,
        memories + "ListMemories",
        {"page_size": 2, "page_token": first["next_page_token"]},
    )
    listed = [m["content"] for m in first["memories"] + rest["memories"]]
    # newest first; the two records of chunk 0 share a commit time, so their ids order them
    assert listed[0] == "works remotely" and listed[3] == "User prefers concise responses"
    assert sorted(listed[1:3]) == ["likes tea", "lives in Lyon"]
    assert "next_page_token" not in rest
    assert rest["memories"][-1]["importance"] == 0.95
    assert "session_id" not in rest["memories"][-1]  # cleared by the mask

    deleted = call(
        server, project, memories + "BatchDeleteMemories", {"ids": ["mem-abc123", "mem-def456"]}
    )
    assert (deleted["deleted"], deleted["not_found"]) == (1, 1)
