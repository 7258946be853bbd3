"""The embedded Postgres and Valkey: persistence, crash recovery, locking, and no leftovers."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from zerodb_batch.embedded import (
    Embedded,
    EmbeddedBusy,
    EmbeddedError,
    EmbeddedPostgres,
    EmbeddedValkey,
)
from zerodb_batch.embedded import valkey as valkey_module

# Each runs in a child process that we SIGKILL, as a crashed `serve` would be.
START_POSTGRES = """
import sys, time
from pathlib import Path
from zerodb_batch.embedded import EmbeddedPostgres
print(EmbeddedPostgres(Path(sys.argv[1])).start(), flush=True)
time.sleep(120)
"""
START_VALKEY = """
import sys, time
from pathlib import Path
from zerodb_batch.embedded import EmbeddedValkey
EmbeddedValkey(Path(sys.argv[1])).start()
print("started", flush=True)
time.sleep(120)
"""


def run_killed_child(script: str, data_dir: Path) -> str:
    """Run `script` until it prints one line, SIGKILL it, and return that line."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 60)
        assert ready, "child did not start its server in time"
        return child.stdout.readline().strip()
    finally:
        child.kill()
        child.wait(10)


def postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])


def with_children(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def usernames(procs: list[psutil.Process]) -> set[str]:
    names = set()
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):  # a backend of a closed connection
            names.add(proc.username())
    return names


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    try:
        return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return alive([p for p in procs if psutil.pid_exists(p.pid)])


def wait_dead(procs: list[psutil.Process], timeout: float = 10) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (left := alive(procs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def mentioning(data_dir: Path) -> list[psutil.Process]:
    """Live processes whose command line names something under data_dir."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def query(url: str, text: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(text.encode())
        return cur.fetchall() if cur.description else []


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A short private dir outside pytest's basetemp.

    Every pytest session chmods /tmp/pytest-of-<user> back to 0700, which (run as root) locks
    the Postgres system user out of a PGDATA below it whenever another session starts.
    """
    path = Path(tempfile.mkdtemp(prefix="zdb-embedded-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(tmp_path / "data")
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(tmp_path / "data")
    try:
        yield server
    finally:
        server.stop()


def test_postgres_restart_keeps_data_and_stops_clean(postgres: EmbeddedPostgres) -> None:
    url = postgres.start()
    assert url == f"postgresql://postgres@/zerodb?host={postgres.data_dir / 'run'}"
    assert query(url, "SHOW listen_addresses") == [("",)]
    query(
        url, "CREATE EXTENSION vector; CREATE TABLE t (v vector(2)); INSERT INTO t VALUES ('[1,2]')"
    )
    procs = with_children(postmaster_pid(postgres.pgdata))
    if os.geteuid() == 0:
        assert usernames(procs) == {"embedded_postgres"}
    postgres.stop()
    postgres.stop()  # idempotent
    assert wait_dead(procs, timeout=0) == []
    assert postgres.start() == url
    assert query(url, "SELECT v::text FROM t") == [("[1,2]",)]


def test_postgres_adopts_server_left_by_killed_process(postgres: EmbeddedPostgres) -> None:
    url = run_killed_child(START_POSTGRES, postgres.data_dir)
    survivor = postmaster_pid(postgres.pgdata)
    procs = with_children(survivor)
    assert alive(procs), "a SIGKILLed owner should leave Postgres running"
    assert postgres.start() == url
    assert postmaster_pid(postgres.pgdata) == survivor
    postgres.stop()
    assert wait_dead(procs, timeout=0) == []


def test_postgres_recovers_after_postmaster_was_killed(postgres: EmbeddedPostgres) -> None:
    url = postgres.start()
    query(url, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
    procs = with_children(postmaster_pid(postgres.pgdata))
    procs[0].kill()
    assert wait_dead(procs) == []
    assert (postgres.pgdata / "postmaster.pid").exists()  # stale, naming a dead postmaster
    assert postgres.start() == url
    assert query(url, "SELECT x FROM t") == [(1,)]


def test_postgres_starts_when_pid_file_names_another_program(
    postgres: EmbeddedPostgres,
) -> None:
    postgres.start()
    pid_file = postgres.pgdata / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    postgres.stop()
    # After a reboot the old pid can belong to anything; Postgres alone would refuse to start.
    with subprocess.Popen(["sleep", "60"]) as other:
        try:
            pid_file.write_text("\n".join([str(other.pid), *lines[1:]]) + "\n")
            url = postgres.start()
            assert query(url, "SELECT 1") == [(1,)]
            assert postmaster_pid(postgres.pgdata) != other.pid
        finally:
            other.kill()


def test_postgres_failure_is_embedded_error_with_log(postgres: EmbeddedPostgres) -> None:
    postgres.start()
    postgres.stop()
    with (postgres.pgdata / "postgresql.conf").open("a") as conf:
        conf.write("\nno_such_setting = 1\n")
    with pytest.raises(EmbeddedError, match="no_such_setting"):
        postgres.start()
    assert mentioning(postgres.pgdata) == []


def test_valkey_keeps_data_across_restart(valkey: EmbeddedValkey) -> None:
    url = valkey.start()
    assert url == f"unix://{valkey.dir / 'valkey.sock'}"
    with redis.Redis.from_url(url) as client:
        client.set("k", "v")
        entry = client.xadd("s", {"f": "1"})
    proc = psutil.Process(int(valkey.pid_path.read_text()))
    valkey.stop()
    valkey.stop()  # idempotent
    assert not valkey.running()
    assert wait_dead([proc], timeout=0) == []
    with redis.Redis.from_url(valkey.start()) as client:
        assert client.get("k") == b"v"
        assert client.xrange("s") == [(entry, {b"f": b"1"})]
        assert client.config_get("port") == {"port": "0"}


def test_valkey_restart_if_dead(valkey: EmbeddedValkey) -> None:
    assert not valkey.restart_if_dead()  # never started: nothing to supervise
    url = valkey.start()
    assert not valkey.restart_if_dead()
    os.kill(int(valkey.pid_path.read_text()), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while valkey.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert valkey.restart_if_dead()
    assert valkey.running()
    with redis.Redis.from_url(url) as client:
        assert client.ping()
    valkey.stop()
    assert not valkey.restart_if_dead()  # a deliberate stop is not a death


def test_postgres_restart_if_dead_waits_for_the_dead_postmasters_processes(
    postgres: EmbeddedPostgres,
) -> None:
    assert not postgres.restart_if_dead()  # never started: nothing to supervise
    url = postgres.start()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (1)")
    assert not postgres.restart_if_dead()
    killed = psutil.Process(postmaster_pid(postgres.pgdata))
    held = killed.children()[0]
    held.suspend()  # a stopped process of the dead postmaster still holds its shared memory
    try:
        killed.kill()
        killed.wait(10)
        assert not postgres.restart_if_dead()  # not while that process is there
    finally:
        held.resume()
    held.wait(10)
    assert postgres.restart_if_dead()
    assert query(url, "SELECT x FROM kept") == [(1,)]
    postgres.stop()
    assert not postgres.restart_if_dead()  # a deliberate stop is not a death


def test_valkey_dies_with_its_killed_parent(tmp_path: Path) -> None:
    run_killed_child(START_VALKEY, tmp_path / "data")
    pid = int((tmp_path / "data" / "valkey" / "valkey.pid").read_text())
    assert wait_dead([psutil.Process(pid)]) == []


def test_valkey_outlives_the_thread_that_started_it(valkey: EmbeddedValkey) -> None:
    # PR_SET_PDEATHSIG is per thread; a supervisor may restart Valkey from a worker thread.
    starter = threading.Thread(target=valkey.start)
    starter.start()
    starter.join()
    time.sleep(0.3)
    assert valkey.running()


def test_valkey_ends_orphan_from_earlier_run(tmp_path: Path) -> None:
    earlier, later = EmbeddedValkey(tmp_path / "data"), EmbeddedValkey(tmp_path / "data")
    try:
        with redis.Redis.from_url(earlier.start()) as client:
            client.set("k", "v")
        orphan = psutil.Process(int(earlier.pid_path.read_text()))
        with redis.Redis.from_url(later.start()) as client:
            assert client.get("k") == b"v"
        assert wait_dead([orphan], timeout=0) == []
        assert int(later.pid_path.read_text()) != orphan.pid
    finally:
        later.stop()
        earlier.stop()


def test_valkey_failure_is_embedded_error(
    valkey: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(valkey_module, "valkey_server", lambda: Path("/bin/false"))
    with pytest.raises(EmbeddedError, match="exited with code 1"):
        valkey.start()
    assert not valkey.running()


def test_embedded_locks_data_dir_and_leaves_nothing_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"
    with Embedded(data_dir) as served:
        assert query(served.database_url, "SELECT current_database()") == [("zerodb",)]
        with redis.Redis.from_url(served.redis_url) as client:
            assert client.ping()
        procs = with_children(postmaster_pid(served.postgres.pgdata))
        procs.append(psutil.Process(int(served.valkey.pid_path.read_text())))
        with pytest.raises(EmbeddedBusy, match=f"in use .*pid {os.getpid()}"):
            Embedded(data_dir).__enter__()
    assert wait_dead(procs, timeout=0) == []
    assert mentioning(data_dir) == []
    with Embedded(data_dir) as again:  # the lock was released
        assert again.redis_url == served.redis_url


def test_embedded_long_data_dir_uses_short_socket_dirs(tmp_path: Path) -> None:
    data_dir = tmp_path / ("d" * 100)
    short_dirs: list[Path] = []
    try:
        with Embedded(data_dir) as served:
            short_dirs = [served.valkey.socket_path.parent, Path(served.database_url.split("=")[1])]
            assert all(str(d).startswith("/tmp/zerodb-") for d in short_dirs)
            assert query(served.database_url, "SELECT 1") == [(1,)]
            with redis.Redis.from_url(served.redis_url) as client:
                assert client.ping()
        assert mentioning(data_dir) == []
    finally:
        for short_dir in short_dirs:
            shutil.rmtree(short_dir, ignore_errors=True)
