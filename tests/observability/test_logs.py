"""ZERODB_LOG_FORMAT=json, from a real `serve`: one JSON object per line, the fields an RPC's line
promises, and never an API key or a payload, even at DEBUG and when calls fail."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests

from tests.plugins.serve import Serve, free_port, serve_env
from tests.plugins.services import Backends
from zerodb.v1 import event_pb2, memory_pb2
from zerodb.v1.event_pb2_grpc import EventServiceStub
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub

UPSERT = "/zerodb.v1.MemoryService/BatchUpsertMemories"


def calls(address: str, http: str, project: str, key: str, marker: str, trace_id: str) -> None:
    """Calls that succeed and calls that fail, every one carrying the key and the marker."""
    auth = (("x-api-key", key),)
    record = memory_pb2.Memory(content=marker, tags=[marker], session_id=marker)
    record.metadata.update({"note": marker})
    with grpc.insecure_channel(address) as channel:
        memories = MemoryServiceStub(channel)
        ok = memory_pb2.BatchUpsertMemoriesRequest(project_id=project, records=[record])
        traceparent = ("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01")
        memories.BatchUpsertMemories(ok, metadata=(*auth, traceparent))
        bad = memory_pb2.BatchUpsertMemoriesRequest(
            project_id=project, records=[memory_pb2.Memory(content=marker, importance=7)]
        )
        for request, metadata in ((bad, auth), (ok, (("x-api-key", f"zdb_{marker}"),))):
            with pytest.raises(grpc.RpcError):
                memories.BatchUpsertMemories(request, metadata=metadata)
        event = event_pb2.Event(topic="log.test")
        event.event_payload.update({"secret": marker})
        events = event_pb2.BatchPublishEventsRequest(project_id=project, events=[event])
        EventServiceStub(channel).BatchPublishEvents(events, metadata=auth)
    url = f"{http}/api/v1/projects/{project}/database/memory/batch/upsert"
    headers = {"authorization": f"Bearer {key}", "x-request-id": "req-from-http"}
    assert requests.post(url, json={"records": [{"content": marker}]}, headers=headers,
                         timeout=30).status_code == 200  # fmt: skip
    headers["content-type"] = "application/json"
    assert requests.post(url, data=f'{{"records": [{marker}', headers=headers,
                         timeout=30).status_code == 400  # fmt: skip


def rpc_lines(lines: list[dict[str, Any]], code: str) -> list[dict[str, Any]]:
    return [r for r in lines if r.get("rpc") == UPSERT and r.get("code") == code]


def test_json_logs_parse_line_by_line_and_hold_no_key_or_payload(
    own_database: str, backends: Backends, data_dir: Path
) -> None:
    http_port, marker, trace_id = (
        free_port(),
        f"PAYLOAD{secrets.token_hex(6)}",
        secrets.token_hex(16),
    )
    env = serve_env(
        data_dir, f"127.0.0.1:{free_port()}", ZERODB_DATABASE_URL=own_database,
        ZERODB_REDIS_URL=backends.redis_url, ZERODB_HTTP_LISTEN=f"127.0.0.1:{http_port}",
        ZERODB_LOG_FORMAT="json", ZERODB_LOG_LEVEL="DEBUG",
    )  # fmt: skip
    serve = Serve(env)
    try:
        address = serve.wait_for(r"serving on (\S+)")[1]
        project = serve.wait_for(r"project_id: (\S+)")[1]
        key = serve.wait_for(r"api_key: (\S+)")[1]
        calls(address, f"http://127.0.0.1:{http_port}", project, key, marker, trace_id)
    finally:
        assert serve.stop() == 0
        serve.exit_code()
    text = "".join(serve.stderr)
    lines = [json.loads(line) for line in text.splitlines()]  # each line one JSON object

    assert lines and all(isinstance(r, dict) for r in lines)
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in lines)
    (ok_line, from_http) = rpc_lines(lines, "OK")
    assert ok_line["project_id"] == project and ok_line["trace_id"] == trace_id
    assert ok_line["duration_ms"] >= 0 and ok_line["request_id"] and ok_line["level"] == "INFO"
    assert from_http["request_id"] == "req-from-http" and from_http["project_id"] == project
    (refused,) = rpc_lines(lines, "INVALID_ARGUMENT")
    assert refused["reason"] == "INVALID_ARGUMENT"
    (stranger,) = rpc_lines(lines, "UNAUTHENTICATED")
    assert (stranger["reason"], stranger["project_id"]) == ("API_KEY_INVALID", None)
    assert key not in text and key.removeprefix("zdb_") not in text, "an API key was logged"
    assert marker not in text, "a payload was logged"
