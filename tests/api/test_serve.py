"""The README's commands as a user runs them: `zerodb-batch serve` (embedded backends), grpcurl."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.plugins.serve import Serve, free_port, grpcurl, serve_env
from tests.plugins.services import scratch_dir

SEED_UPSERT = {
    "records": [
        {
            "content": "User prefers concise responses",
            "memory_type": "semantic",
            "importance": 0.8,
            "tags": ["preference", "communication"],
        },
        {
            "content": "Project uses FastAPI + SQLAlchemy",
            "memory_type": "semantic",
            "importance": 0.9,
            "tags": ["tech-stack"],
        },
    ]
}


class Running:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.address = f"127.0.0.1:{free_port()}"
        self.project_id = ""
        self.key = ""

    def start(self) -> Serve:
        self.serve = Serve(serve_env(self.data_dir, self.address))
        self.serve.wait_for(r"zerodb-batch serving on")
        return self.serve

    def call(self, method: str, body: dict[str, object]) -> dict[str, object]:
        body = {"project_id": self.project_id, **body}
        done = grpcurl(
            "-plaintext",
            "-H",
            f"x-api-key: {self.key}",
            "-d",
            "@",
            self.address,
            f"zerodb.v1.MemoryService/{method}",
            data=json.dumps(body),
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    with scratch_dir() as scratch:
        yield from _running(scratch / "data")


def _running(data_dir: Path) -> Iterator[Running]:
    r = Running(data_dir)
    serve = Serve(serve_env(r.data_dir, r.address))
    serve.wait_for(r"zerodb-batch serving on")
    r.project_id = serve.wait_for(r"project_id: (\S+)")[1]
    r.key = serve.wait_for(r"api_key: (zdb_\S+)")[1]
    r.serve = serve
    yield r
    r.serve.stop()


def test_list_shows_every_service(running: Running) -> None:
    done = grpcurl("-plaintext", running.address, "list")
    assert done.returncode == 0, done.stderr
    services = set(done.stdout.split())
    assert {
        "zerodb.v1.TableService",
        "zerodb.v1.MemoryService",
        "zerodb.v1.VectorService",
        "zerodb.v1.EventService",
        "zerodb.v1.RlhfService",
        "zerodb.v1.LoadService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services


def test_health_check_serving(running: Running) -> None:
    done = grpcurl("-plaintext", running.address, "grpc.health.v1.Health/Check")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"status": "SERVING"}


def test_readme_upsert_then_get_then_restart_keeps_data(running: Running) -> None:
    reply = running.call("BatchUpsertMemories", SEED_UPSERT)
    assert reply["inserted"] == 2 and len(reply["ids"]) == 2  # type: ignore[arg-type]
    got = running.call("BatchGetMemories", {"ids": reply["ids"]})
    assert [m["content"] for m in got["memories"]] == [  # type: ignore[attr-defined]
        r["content"] for r in SEED_UPSERT["records"]
    ]  # type: ignore[index]

    assert running.serve.stop(signal.SIGTERM) == 0
    running.start()  # same data dir: no new project, the memories are still there
    again = running.call("BatchGetMemories", {"ids": reply["ids"]})
    assert again["memories"] == got["memories"]


def test_missing_key_through_grpcurl(running: Running) -> None:
    done = grpcurl(
        "-plaintext",
        "-d",
        json.dumps({"project_id": running.project_id, **SEED_UPSERT}),
        running.address,
        "zerodb.v1.MemoryService/BatchUpsertMemories",
    )
    assert done.returncode != 0 and "Unauthenticated" in done.stderr


def test_second_serve_on_same_data_dir_refused(running: Running) -> None:
    second = Serve(serve_env(running.data_dir, f"127.0.0.1:{free_port()}"))
    assert second.exit_code() == 2
    assert "in use" in "".join(second.stderr)


def test_port_in_use_is_a_start_up_error(running: Running, data_dir: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        serve = Serve(serve_env(data_dir, f"127.0.0.1:{port}"))
        assert serve.exit_code() == 2
    assert "cannot listen on" in "".join(serve.stderr)


def test_clean_stop_leaves_no_servers(data_dir: Path) -> None:
    r = Running(data_dir)
    serve = r.start()
    children = psutil.Process(serve.proc.pid).children(recursive=True)
    assert serve.stop(signal.SIGINT) == 0
    gone = [p for p in children if not p.is_running() or p.status() == psutil.STATUS_ZOMBIE]
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(r.data_dir) in " ".join(p.info["cmdline"] or ())
    ]
    assert len(gone) == len(children)
    assert leftovers == []


def test_keys_cli_beside_a_running_serve(running: Running) -> None:
    """`keys create/list/revoke` on the data dir that `serve` holds use its PostgreSQL."""
    env = serve_env(running.data_dir, running.address)
    created = Serve(env, "keys", "create", "--project", running.project_id, "--name", "ci")
    assert created.exit_code() == 0, "".join(created.stderr)
    key_id = created.wait_for(r"key_id: (\S+)")[1]
    key = created.wait_for(r"api_key: (zdb_\S+)")[1]
    other = Running(running.data_dir)
    other.address, other.project_id, other.key = running.address, running.project_id, key
    assert other.call("BatchGetMemories", {"ids": ["none"]})["not_found"] == ["none"]

    listed = Serve(env, "keys", "list", "--project", running.project_id)
    assert listed.exit_code() == 0
    assert listed.wait_for(rf"{key_id}\s+zdb_\S+\s+read,write,admin\s+active\s+ci")

    revoked = Serve(env, "keys", "revoke", key_id)
    assert revoked.exit_code() == 0
    again = Serve(env, "keys", "revoke", key_id)
    assert again.exit_code() == 1 and "no active key" in "".join(again.stderr)


def test_keys_cli_scopes_and_expiry(running: Running) -> None:
    """`keys create --scope read --expires-in 1h`: the key reads, cannot write, and lists so."""
    env = serve_env(running.data_dir, running.address)
    created = Serve(
        env, "keys", "create", "--project", running.project_id, "--scope", "read",
        "--expires-in", "1h", "--name", "reader",
    )  # fmt: skip
    assert created.exit_code() == 0, "".join(created.stderr)
    key_id = created.wait_for(r"key_id: (\S+)")[1]
    reader = Running(running.data_dir)
    reader.address, reader.project_id = running.address, running.project_id
    reader.key = created.wait_for(r"api_key: (zdb_\S+)")[1]
    assert reader.call("BatchGetMemories", {"ids": ["none"]})["not_found"] == ["none"]
    refused = grpcurl(
        "-plaintext", "-H", f"x-api-key: {reader.key}", "-d", "@", running.address,
        "zerodb.v1.MemoryService/BatchUpsertMemories",
        data=json.dumps({"project_id": running.project_id, **SEED_UPSERT}),
    )  # fmt: skip
    assert refused.returncode != 0
    assert "PermissionDenied" in refused.stderr and "'write' scope" in refused.stderr

    listed = Serve(env, "keys", "list", "--project", running.project_id)
    assert listed.exit_code() == 0
    assert listed.wait_for(rf"{key_id}\s+zdb_\S+\s+read\s+expires \S+ \S+Z\s+reader")
    bad = Serve(env, "keys", "create", "--project", running.project_id, "--expires-in", "soon")
    assert bad.exit_code() == 2 and "not a duration" in "".join(bad.stderr)


def test_restart_after_a_crash(data_dir: Path) -> None:
    """SIGKILL leaves PostgreSQL running and stale pid files; the next serve carries on."""
    r = Running(data_dir)
    serve = r.start()
    r.project_id = serve.wait_for(r"project_id: (\S+)")[1]
    r.key = serve.wait_for(r"api_key: (zdb_\S+)")[1]
    ids = r.call("BatchUpsertMemories", SEED_UPSERT)["ids"]
    assert serve.stop(signal.SIGKILL) == -signal.SIGKILL

    r.start()
    assert len(r.call("BatchGetMemories", {"ids": ids})["memories"]) == 2  # type: ignore[arg-type]
    assert r.serve.stop(signal.SIGTERM) == 0
    leftovers = [
        p for p in psutil.process_iter(["cmdline"])
        if str(r.data_dir) in " ".join(p.info["cmdline"] or ())
    ]  # fmt: skip
    assert leftovers == []
