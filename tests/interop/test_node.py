"""The Node.js client in node/ (grpc-js, protos loaded at run time) against a real server.

It does a unary batch upsert, a client-streamed load of 10,000 records in chunks, a subscription
that receives published events, decodes rich error details (`grpc-status-details-bin` ->
google.rpc.Status -> BadRequest) and asks reflection v1 and v1alpha. Runs whenever `node` is on
the PATH; `npm ci` installs its packages (from package-lock.json) when they are missing.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import subprocess
from pathlib import Path

import google.api.annotations_pb2
import pytest

from tests.plugins.server import Project, ServerThread

NODE_DIR = Path(__file__).parent / "node"
PROTOS = Path(__file__).resolve().parents[2] / "protos"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


def proto_includes() -> str:
    googleapis = Path(google.api.annotations_pb2.__file__).resolve().parents[2]
    well_known = Path(str(importlib.resources.files("grpc_tools"))) / "_proto"
    return os.pathsep.join(str(p) for p in (PROTOS, googleapis, well_known))


def test_node_client(server: ServerThread, project: Project) -> None:
    if not (NODE_DIR / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)
    env = {
        **os.environ,
        "ZDB_TARGET": server.address,
        "ZDB_PROJECT": project.id,
        "ZDB_KEY": project.key,
        "ZDB_PROTO_INCLUDES": proto_includes(),
    }
    done = subprocess.run(
        ["node", "interop.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    checks = {r["check"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert list(checks) == [
        "unary_upsert", "streamed_load", "subscription", "rich_error", "reflection_v1",
        "reflection_v1alpha",
    ]  # fmt: skip
    assert checks["streamed_load"]["inserted"] == "10000"
    assert checks["rich_error"]["fields"] == ["records[0].importance", "records[1].memory_type"]
