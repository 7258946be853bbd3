"""Each class of error over HTTP: its status, `status` name, message and the gRPC details.

What the server can be made to answer here is called for real; the codes no request can provoke
on purpose (CANCELLED, INTERNAL, ABORTED, ...) are checked on real AioRpcError values.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import requests
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from tests.plugins.checks import outage_database
from tests.plugins.http import Door, door_of, error_of
from tests.plugins.server import Project, ServerThread, server_settings
from tests.plugins.services import Backends
from zerodb_batch.http.problems import HTTP_STATUS, rpc_error_body

UPSERT = "/memory/batch/upsert"
SEED = {"records": [{"content": "User prefers concise responses", "memory_type": "semantic"}]}


def test_validation_lists_every_field(door: Door) -> None:
    reply = door.post(UPSERT, {"records": [{"importance": 2}, {"memory_type": "x"}]})
    error = error_of(reply, 400, "INVALID_ARGUMENT")
    assert error["message"] == "2 of 2 records are invalid; nothing was written"
    assert error["by_type"]["ErrorInfo"]["reason"] == "INVALID_ARGUMENT"
    fields = [v["field"] for v in error["by_type"]["BadRequest"]["field_violations"]]
    assert fields == ["records[0].importance", "records[1].memory_type"]


def test_batch_too_large(door: Door) -> None:
    error = error_of(
        door.post(UPSERT, {"records": [{"content": "x"}] * 501}), 400, "INVALID_ARGUMENT"
    )
    info = error["by_type"]["ErrorInfo"]
    assert (info["reason"], info["metadata"]["max"], info["metadata"]["actual"]) == (
        "BATCH_TOO_LARGE", "500", "501",
    )  # fmt: skip


def test_missing_key(door: Door) -> None:
    reply = requests.post(door.base + UPSERT, json=SEED, timeout=30)
    error = error_of(reply, 401, "UNAUTHENTICATED")
    assert error["by_type"]["ErrorInfo"]["reason"] == "API_KEY_MISSING"


def test_wrong_key(door: Door) -> None:
    reply = requests.post(
        door.base + UPSERT, json=SEED, headers={"x-api-key": "zdb_no"}, timeout=30
    )
    assert error_of(reply, 401, "UNAUTHENTICATED")["by_type"]["ErrorInfo"]["reason"] == (
        "API_KEY_INVALID"
    )


def test_bearer_key_accepted(door: Door) -> None:
    headers = {"authorization": f"Bearer {door.project.key}"}
    reply = requests.post(door.base + UPSERT, json=SEED, headers=headers, timeout=30)
    assert reply.json()["inserted"] == 1


def test_another_projects_key(door: Door, server: ServerThread) -> None:
    other = door_of(server, Project(*server.new_key()))
    reply = requests.post(door.base + UPSERT, json=SEED, headers=other.headers, timeout=30)
    error = error_of(reply, 403, "PERMISSION_DENIED")
    assert error["by_type"]["ErrorInfo"]["reason"] == "PROJECT_MISMATCH"


def test_not_found(door: Door) -> None:
    error = error_of(door.get("/loads/no-such-load"), 404, "NOT_FOUND")
    assert error["by_type"]["ErrorInfo"]["reason"] == "LOAD_NOT_FOUND"


def test_deadline(door: Door) -> None:
    error = error_of(door.post(UPSERT, SEED, **{"grpc-timeout": "1n"}), 504, "DEADLINE_EXCEEDED")
    assert error["message"] == "Deadline Exceeded"


def test_bad_deadline_header(door: Door) -> None:
    error = error_of(door.post(UPSERT, SEED, **{"grpc-timeout": "soon"}), 400, "INVALID_ARGUMENT")
    assert error["by_type"]["ErrorInfo"]["reason"] == "INVALID_TIMEOUT"


def test_request_id_is_forwarded_and_echoed(door: Door) -> None:
    reply = door.post(UPSERT, {"records": [{"importance": 3}]}, **{"x-request-id": "req-42"})
    assert reply.status_code == 400 and reply.headers["x-request-id"] == "req-42"
    assert len(door.post(UPSERT, SEED).headers["x-request-id"]) == 16  # made when absent


@pytest.fixture
def small_server(database_url: str, backends: Backends) -> Iterator[ServerThread]:
    settings = server_settings(
        database_url, backends.redis_url, max_message_bytes=65536, max_subscriptions=0
    )
    running = ServerThread(settings)
    yield running
    running.close()


def test_body_over_the_limit(small_server: ServerThread) -> None:
    door = door_of(small_server, Project(*small_server.new_key()))
    big = {"records": [{"content": "x" * 60_000}, {"content": "y" * 10_000}]}
    error = error_of(door.post(UPSERT, big), 413, "RESOURCE_EXHAUSTED")
    info = error["by_type"]["ErrorInfo"]
    assert (info["reason"], info["metadata"]["max_bytes"]) == ("BODY_TOO_LARGE", "65536")


def test_too_many_subscriptions(small_server: ServerThread) -> None:
    door = door_of(small_server, Project(*small_server.new_key()))
    error = error_of(door.get("/events/stream"), 429, "RESOURCE_EXHAUSTED")
    assert "subscriptions open" in error["message"]


def test_database_down(backends: Backends) -> None:
    with outage_database(backends) as down:
        running = ServerThread(server_settings(down.url, backends.redis_url))
        try:
            door = door_of(running, Project(*running.new_key()))
            down.allow(False)
            error = error_of(door.post(UPSERT, SEED), 503, "UNAVAILABLE")
            assert error["by_type"]["ErrorInfo"]["reason"] == "DEPENDENCY_UNAVAILABLE"
        finally:
            down.allow(True)
            running.close()


def test_failed_precondition_is_400(door: Door) -> None:
    line = '{"load_id": "gap", "offset": 3, "records": [{"content": "x"}]}\n'
    reply = requests.post(
        door.base + "/memory/stream/upsert",
        data=line,
        headers={**door.headers, "content-type": "application/x-ndjson"},
        timeout=30,
    )
    error = error_of(reply, 400, "FAILED_PRECONDITION")
    assert error["by_type"]["ErrorInfo"]["reason"] == "OFFSET_GAP"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.CANCELLED, 499),
        (grpc.StatusCode.UNKNOWN, 500),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.ABORTED, 409),
        (grpc.StatusCode.OUT_OF_RANGE, 400),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.DATA_LOSS, 500),
    ],
)
def test_codes_no_request_provokes(code: grpc.StatusCode, status: int) -> None:
    """Google's mapping (google/rpc/code.proto), with the details carried over."""
    info = error_details_pb2.ErrorInfo(reason="R", domain="d", metadata={"k": "v"})
    packed = any_pb2.Any()
    packed.Pack(info)
    details = status_pb2.Status(code=code.value[0], message="m", details=[packed])
    trailers = grpc.aio.Metadata(("grpc-status-details-bin", details.SerializeToString()))
    error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, details="m")
    http_status, body = rpc_error_body(error)
    assert http_status == status == HTTP_STATUS[code]
    assert body == {
        "error": {
            "code": status,
            "message": "m",
            "status": code.name,
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "R",
                    "domain": "d",
                    "metadata": {"k": "v"},
                }
            ],
        }
    }


def test_every_code_has_a_status() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
