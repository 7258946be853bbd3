"""The events README commands as a user types them: grpcurl publish and subscribe, redis-cli."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from tests.plugins.events import stream_key
from tests.plugins.serve import grpcurl, grpcurl_command
from tests.plugins.server import Project, ServerThread
from tests.plugins.services import Backends

SEED_PUBLISH = {
    "events": [
        {"topic": "agent.task.completed", "event_payload": {"task_id": "t-1", "status": "done"}},
        {"topic": "agent.task.started", "event_payload": {"task_id": "t-2"}},
        {"topic": "billing.invoice.paid", "event_payload": {"invoice": "inv-9"}},
    ]
}


def events_in(found: list[dict[str, object]]) -> int:
    return sum("event" in m for m in found)


def watch(
    *args: str, until: Callable[[list[dict[str, object]]], bool], timeout: float = 30
) -> list[dict[str, object]]:
    """Run grpcurl on a streaming call until the messages so far satisfy `until` (or fail after
    `timeout` s), then stop it: no dependence on how fast the messages come."""
    proc = subprocess.Popen(grpcurl_command("-plaintext", "-max-time", str(timeout), *args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + timeout + 5
        while not until(found := complete_messages("".join(out))):
            if proc.poll() is not None and not reader.is_alive():
                pytest.fail(f"grpcurl ended early: {proc.stderr.read()}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                pytest.fail(f"grpcurl printed only {found}")
            time.sleep(0.05)
        return found
    finally:
        proc.terminate()
        proc.wait(10)
        reader.join(10)


def complete_messages(output: str) -> list[dict[str, object]]:
    """The messages printed in full so far (the last may still be arriving)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := _skip_space(output, at)) < len(output):
        try:
            message, at = decoder.raw_decode(output, at)
        except json.JSONDecodeError:
            break
        found.append(message)
    return found


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def test_readme_publish_then_subscribe_then_xrange(
    server: ServerThread, project: Project, backends: Backends
) -> None:
    auth = ("-H", f"x-api-key: {project.key}")
    body = json.dumps({"project_id": project.id, **SEED_PUBLISH})
    done = grpcurl("-plaintext", *auth, "-d", "@", server.address,
                   "zerodb.v1.EventService/BatchPublishEvents", data=body)  # fmt: skip
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["published"] == 3 and len(reply["ids"]) == 3

    request = {"project_id": project.id, "topics": ["agent.task.*"], "start_after_stream_id": "0"}
    # A subscription runs until the caller stops it: here, once both events have arrived.
    call = ("-d", json.dumps(request), server.address, "zerodb.v1.EventService/SubscribeEvents")
    got = watch(*auth, *call, until=lambda m: events_in(m) == 2)
    assert "heartbeat" in got[0]
    events = [m["event"] for m in got if "event" in m]
    assert [e["id"] for e in events] == reply["ids"][:2]  # type: ignore[index]
    assert events[0]["event_payload"] == {"task_id": "t-1", "status": "done"}  # type: ignore[index]

    redis_cli = shutil.which("redis-cli") or shutil.which("valkey-cli")
    if redis_cli is None or not backends.redis_url.startswith("unix://"):
        pytest.skip("no redis-cli, or Redis is not the embedded one on a unix socket")
    socket = backends.redis_url.removeprefix("unix://")
    listed = subprocess.run([redis_cli, "-s", socket, "XRANGE", stream_key(project.id), "-", "+"],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert all(i in listed.stdout for i in reply["ids"])  # type: ignore[union-attr]
