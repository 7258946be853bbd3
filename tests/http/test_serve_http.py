"""`zerodb-batch serve` with its HTTP door: `--http`, `ZERODB_HTTP_LISTEN`, `off`, a port in use."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.plugins.serve import Serve, free_port, serve_env
from tests.plugins.server import ServerThread
from tests.plugins.services import Backends


def env_for(tmp: Path, database_url: str, backends: Backends, **extra: str) -> dict[str, str]:
    return serve_env(
        tmp,
        f"127.0.0.1:{free_port()}",
        ZERODB_DATABASE_URL=database_url,
        ZERODB_REDIS_URL=backends.redis_url,
        **extra,
    )


def test_http_flag_serves_the_door(
    tmp_path: Path, database_url: str, backends: Backends, server: ServerThread
) -> None:
    project, key = server.new_key()  # the session server shares this database
    port = free_port()
    serve = Serve(env_for(tmp_path, database_url, backends), "serve", "--http", f"127.0.0.1:{port}")
    try:
        serve.wait_for(r"zerodb-batch serving on")
        assert serve.wait_for(r"HTTP/JSON on (\S+)")[1] == f"http://127.0.0.1:{port}"
        done = subprocess.run(
            ["curl", "-s", "-H", f"x-api-key: {key}",
             f"http://127.0.0.1:{port}/api/v1/projects/{project}/database/memory?page_size=1"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert json.loads(done.stdout) == {"memories": [], "next_page_token": ""}
    finally:
        assert serve.stop(signal.SIGTERM) == 0


def test_http_off_serves_no_door(tmp_path: Path, database_url: str, backends: Backends) -> None:
    serve = Serve(env_for(tmp_path, database_url, backends, ZERODB_HTTP_LISTEN="off"))
    try:
        serve.wait_for(r"zerodb-batch serving on")
    finally:
        assert serve.stop(signal.SIGTERM) == 0
    serve.exit_code()
    assert not any("HTTP/JSON" in line for line in list(serve.lines.queue))


@pytest.mark.parametrize("how", ["flag", "env"])
def test_http_port_in_use_is_a_start_up_error(
    tmp_path: Path, database_url: str, backends: Backends, how: str
) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = f"127.0.0.1:{held.getsockname()[1]}"
        if how == "flag":
            serve = Serve(env_for(tmp_path, database_url, backends), "serve", "--http", taken)
        else:
            serve = Serve(env_for(tmp_path, database_url, backends, ZERODB_HTTP_LISTEN=taken))
        assert serve.exit_code() == 2
    err = "".join(serve.stderr).strip()
    assert err.startswith(f"zerodb-batch: cannot listen for HTTP on {taken}")
    assert "in use" in err and "Traceback" not in err and len(err.splitlines()) == 1
