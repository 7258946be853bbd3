"""The embedded Valkey: a child process on a unix socket, with an append-only file."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from zerodb_batch.embedded import processes
from zerodb_batch.embedded.binaries import valkey_server
from zerodb_batch.embedded.errors import EmbeddedError

# The package's logger, as before it was split into modules: log lines keep their name.
_log = logging.getLogger("zerodb_batch.embedded")

_VALKEY_START_TIMEOUT: Final = 10.0
_PING_TIMEOUT: Final = 1.0

# PR_SET_PDEATHSIG fires when the spawning *thread* exits, so Valkey is spawned from this one
# thread, which lives as long as the process, whichever thread (say, asyncio.to_thread) asks.
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zerodb-valkey-spawner")


def _valkey_quote(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _with_parent_death_signal(command: list[str]) -> list[str]:
    """`command` run so that it gets SIGTERM when the spawning thread exits (Linux).

    util-linux's setpriv sets PR_SET_PDEATHSIG and execs: no Python runs between fork and exec,
    which a preexec_fn would do, unsafely in a process with gRPC's threads. Without setpriv,
    Valkey simply outlives a killed parent and the next start ends it as an orphan.
    """
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    return [setpriv, "--pdeathsig", "TERM", *command] if setpriv else command


def _answers_ping(socket_path: Path) -> bool:
    """True once Valkey replies +PONG to an inline PING on `socket_path`.

    Not listening yet, or a -LOADING error while it reads the AOF back, both mean not ready.
    A bare socket keeps redis out of this package: the events package is its only importer.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(_PING_TIMEOUT)
            sock.connect(os.fspath(socket_path))
            sock.sendall(b"PING\r\n")
            with sock.makefile("rb") as replies:
                return replies.readline().startswith(b"+PONG")
    except OSError:  # refused, missing socket, or timed out
        return False


class EmbeddedValkey:
    """Valkey 9 with an append-only file in `data_dir/valkey`, on a unix socket, as our child.

    The child gets SIGTERM when this process dies, however it dies, so it is never orphaned.
    """

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir.absolute() / "valkey"
        self.conf_path = self.dir / "valkey.conf"
        self.log_path = self.dir / "valkey.log"
        self.pid_path = self.dir / "valkey.pid"
        socket_dir = processes.socket_dir(self.dir, data_dir.absolute(), "valkey.sock", "valkey")
        self.socket_path = socket_dir / "valkey.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start valkey-server (ending an orphan from an earlier run first); return its URL."""
        if not self.running():
            processes.private_dir(self.dir, None)
            processes.private_dir(self.socket_path.parent, None)
            self._stop_orphan()
            self.conf_path.write_text(self._config())
            self._proc = _spawner.submit(self._spawn).result()
            try:
                self._wait_ready()
            except BaseException:
                self.stop()
                raise
        return f"unix://{self.socket_path}"

    def stop(self) -> None:
        """SIGTERM (Valkey flushes its AOF), SIGKILL after 10 s; safe to call again."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(processes.STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _log.warning(
                "valkey-server %d ignored SIGTERM for %ss; killing it",
                proc.pid,
                processes.STOP_TIMEOUT,
            )
            proc.kill()
            proc.wait(5)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def restart_if_dead(self) -> bool:
        """If the child exited without stop(), start it again and return True."""
        if self._proc is None or self._proc.poll() is None:
            return False
        _log.warning(
            "valkey-server exited with code %s; restarting\n%s",
            self._proc.returncode,
            processes.log_tail(self.log_path, 10),
        )
        self._proc = None
        self.start()
        return True

    def _config(self) -> str:
        q = _valkey_quote
        return "\n".join(
            [
                "port 0",  # unix socket only
                f"unixsocket {q(self.socket_path)}",
                "unixsocketperm 700",
                f"dir {q(self.dir)}",
                "appendonly yes",
                "appendfsync everysec",
                'save ""',  # the AOF is the persistence; no RDB snapshots on top
                f"pidfile {q(self.pid_path)}",
                "daemonize no",
                f"logfile {q(self.log_path)}",
                "",
            ]
        )

    def _stop_orphan(self) -> None:
        """End a valkey-server still running from an earlier run, named by our pidfile."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return
        # The pid may have been reused since; only a valkey-server is ours to end.
        if processes.pid_alive(pid) and "valkey-server" in " ".join(processes.cmdline(pid)):
            _log.warning("stopping orphaned valkey-server %d on %s", pid, self.dir)
            processes.terminate(pid, signal.SIGTERM)

    def _spawn(self) -> subprocess.Popen[bytes]:
        binary = valkey_server()
        try:
            with open(self.log_path, "ab") as log:
                # stdout/stderr too: a bad config line is reported there, before `logfile` applies.
                # A new session keeps a terminal's Ctrl-C away, so `serve` stops it in order.
                return subprocess.Popen(
                    _with_parent_death_signal([str(binary), str(self.conf_path)]),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd=self.dir,
                    start_new_session=True,
                )
        except OSError as exc:
            raise EmbeddedError(f"cannot start valkey-server: {exc}") from exc

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + _VALKEY_START_TIMEOUT
        while not _answers_ping(self.socket_path):
            if self._proc.poll() is not None:
                raise EmbeddedError(
                    f"valkey-server exited with code {self._proc.returncode}"
                    f"\n{processes.log_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise EmbeddedError(
                    f"valkey-server did not answer PING on {self.socket_path} "
                    f"within {_VALKEY_START_TIMEOUT}s\n"
                    f"{processes.log_tail(self.log_path)}"
                )
            time.sleep(0.05)
