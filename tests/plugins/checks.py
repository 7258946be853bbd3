"""What many tests check with: an error's status details, polling for a state, an outage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from psycopg import sql

from tests.plugins.services import Backends, create_database, drop_database
from zerodb.v1 import load_pb2

T = TypeVar("T")


def details(err: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo, error_details_pb2.BadRequest]:
    """The ErrorInfo and BadRequest a failed call carries (empty ones if absent)."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, "error carries no google.rpc.Status details"
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    for d in status.details:
        if d.Is(info.DESCRIPTOR):
            d.Unpack(info)
        elif d.Is(bad.DESCRIPTOR):
            d.Unpack(bad)
    return info, bad


def assert_too_large(err: grpc.RpcError, field: str, maximum: int, actual: int) -> None:
    """A batch over its limit: INVALID_ARGUMENT, reason BATCH_TOO_LARGE, the limit, the size
    sent and the field."""
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    info, bad = details(err)
    assert info.reason == "BATCH_TOO_LARGE"
    assert (info.metadata["max"], info.metadata["actual"]) == (str(maximum), str(actual))
    assert bad.field_violations[0].field == field


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 20) -> T:
    """Poll `probe` until it returns something truthy; fail (not a timing check) after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def retry_unavailable(call: Callable[[], T], deadline: float = 60) -> T:
    """What a client does with UNAVAILABLE: retry with backoff, within a deadline."""
    end, pause = time.monotonic() + deadline, 0.2
    while True:
        try:
            return call()
        except grpc.RpcError as e:
            if e.code() is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > end:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 2)


async def waiting_on_lock(
    observer: psycopg.AsyncConnection[Any],
    pid: int,
    *,
    by: int | None = None,
    task: asyncio.Task[None] | None = None,
) -> None:
    """Return once backend `pid` waits on a lock (held by backend `by`, if given); fail (not a
    timing check) after 20 s, or at once with `task`'s own error if `task`, the work that was
    to wait, ends first."""
    query: str = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s"
    params: tuple[int, ...] = (pid,)
    if by is not None:
        query, params = "SELECT %s = ANY(pg_blocking_pids(%s))", (by, pid)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if task is not None and task.done():
            await task
            pytest.fail(f"backend {pid}'s work ended without waiting on the lock")
        row = await (await observer.execute(query, params)).fetchone()
        if row is not None and row[0]:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"backend {pid} never waited on a lock" + (f" of backend {by}" if by else ""))


Statement = tuple[str, tuple[object, ...]]


async def held_while_waiting(
    url: str,
    hold: Statement,
    write: Callable[[psycopg.AsyncConnection[Any]], Awaitable[object]],
    probes: Sequence[Statement],
) -> list[bool]:
    """Which locks `write` holds while it waits on the one `hold` takes: another session runs
    `hold` and keeps its transaction open while `write` runs in one of its own; once `write`
    waits, each probe is tried (100 ms lock timeout, rolled back), True if it had to wait.
    Then `hold` is let go and `write` ends. Lock order made visible, not timed."""
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as writer,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as holder,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as watcher,
    ):

        async def run() -> None:
            async with writer.transaction():
                await write(writer)

        async with holder.transaction(force_rollback=True):  # a hold writes nothing either
            await holder.execute(*hold)
            racing = asyncio.create_task(run())
            await waiting_on_lock(
                watcher, writer.info.backend_pid, by=holder.info.backend_pid, task=racing
            )
            held = []
            for probe in probes:
                try:
                    async with watcher.transaction():
                        await watcher.execute("SET LOCAL lock_timeout = '100ms'")
                        await watcher.execute(*probe)
                        raise _Free
                except psycopg.errors.LockNotAvailable:
                    held.append(True)
                except _Free:
                    held.append(False)  # and rolled back: a probe writes nothing
        await racing
    return held


class _Free(Exception):
    """A probe that did not wait; raised to roll its transaction back."""


class Outage:
    """A database of its own that can be made unreachable and reachable again."""

    def __init__(self, backends: Backends) -> None:
        self.admin = backends.admin_url
        self.url = create_database(backends.admin_url, "zerodb_outage")
        self.name = psycopg.conninfo.conninfo_to_dict(self.url)["dbname"]

    def allow(self, allowed: bool, last: tuple[int, ...] = ()) -> None:
        """Refuse (or let in) new connections; refusing also ends every session, the `last`
        backend pids after the others are gone (a test's lock holder, say, so that no session
        blocked behind its lock gets through in the meantime)."""
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                    sql.Identifier(self.name), sql.Literal(allowed)
                )
            )
            if not allowed:
                conn.execute(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> ALL(%s)",
                    (self.name, list(last)),
                )
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (self.name,),
                )


@contextmanager
def outage_database(backends: Backends) -> Iterator[Outage]:
    """An Outage, reachable again and dropped afterwards."""
    down = Outage(backends)
    try:
        yield down
    finally:
        down.allow(True)
        drop_database(backends.admin_url, down.url)


def succeeds(call: Callable[[], object]) -> bool:
    """True if the call succeeds, False if it is UNAVAILABLE (any other error fails the test)."""
    try:
        call()
    except grpc.RpcError as e:
        if e.code() is not grpc.StatusCode.UNAVAILABLE:
            raise
        return False
    return True


def unavailable_then_recovers(down: Outage, calls: dict[str, Callable[[], object]]) -> None:
    """With the database unreachable every call is UNAVAILABLE (reason DEPENDENCY_UNAVAILABLE);
    once it is back, the same server serves each again without a restart (a client retries
    UNAVAILABLE meanwhile, while the pool reconnects)."""
    down.allow(False)
    for name, call in calls.items():
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE, name
        assert details(caught.value)[0].reason == "DEPENDENCY_UNAVAILABLE", name
    down.allow(True)
    for call in calls.values():
        wait_for(lambda call=call: succeeds(call), "the server to serve again")  # type: ignore[misc]


def last_offset(loads: Any, project: Any, load_id: str) -> int:
    """The load's last committed chunk offset, -1 while it has none (GetLoad: NOT_FOUND)."""
    request = load_pb2.GetLoadRequest(project_id=project.id, load_id=load_id)
    try:
        return int(loads.GetLoad(request, metadata=project.auth).load.last_offset)
    except grpc.RpcError as e:
        if e.code() is not grpc.StatusCode.NOT_FOUND:
            raise
        return -1
