"""A real `grpc.aio` server on port 0, run on its own event loop thread, and typed stubs.

Tests call it through a real channel with the synchronous stubs, so each test is plain code.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import grpc
import pytest

from tests.plugins.checks import Outage, outage_database
from tests.plugins.services import Backends
from zerodb.v1 import memory_pb2_grpc, rlhf_pb2_grpc
from zerodb_batch import app
from zerodb_batch.config import Settings
from zerodb_batch.limits import KEY_SCOPES
from zerodb_batch.storage import keys

T = TypeVar("T")


class ServerThread:
    """An event loop in a daemon thread that owns one App."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.app = self.run(app.start(settings))
        self.address = f"127.0.0.1:{self.app.port}"
        # The HTTP/JSON door's base URL (None when the settings turn it off).
        self.http = f"http://127.0.0.1:{self.app.http_port}" if self.app.http_port else None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def new_key(
        self,
        project_id: str | None = None,
        scopes: tuple[str, ...] = KEY_SCOPES,
        expires_in: timedelta | None = None,
    ) -> tuple[str, str]:
        """(project_id, key): a fresh project (or the given one) and a key for it."""
        project = project_id or f"p-{uuid.uuid4()}"

        async def make() -> tuple[str, str]:
            async with self.app.db.pool.connection() as conn:
                _, key = await keys.create_key(conn, project, "", scopes, expires_in)
                return project, key

        return self.run(make())

    def close(self) -> None:
        self.run(self.app.stop(grace=1))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def server_settings(database_url: str, redis_url: str, **overrides: Any) -> Settings:
    """Settings for a test server: ports 0 (gRPC and HTTP), no auth cache, short drain and pool
    timeouts. Never a fixed HTTP port: several test sessions share this machine."""
    base = Settings(
        database_url=database_url,
        redis_url=redis_url,
        listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        auth_cache_seconds=0,
        drain_seconds=1,
        pool_timeout=2,
    )
    return Settings(**{**base.__dict__, **overrides})


server_settings.__test__ = False  # type: ignore[attr-defined]
test_settings = server_settings  # older name; not collected as a test thanks to __test__


@pytest.fixture(scope="session")
def server(database_url: str, backends: Backends) -> Iterator[ServerThread]:
    running = ServerThread(server_settings(database_url, backends.redis_url))
    yield running
    running.close()


@pytest.fixture(scope="session")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@dataclass(frozen=True)
class Project:
    """A fresh project with its key; `auth` is the call metadata."""

    id: str
    key: str

    @property
    def auth(self) -> tuple[tuple[str, str]]:
        return (("x-api-key", self.key),)


@pytest.fixture
def project(server: ServerThread) -> Project:
    return Project(*server.new_key())


@pytest.fixture
def memories(channel: grpc.Channel) -> memory_pb2_grpc.MemoryServiceStub:
    return memory_pb2_grpc.MemoryServiceStub(channel)


@pytest.fixture
def rlhf(channel: grpc.Channel) -> rlhf_pb2_grpc.RlhfServiceStub:
    return rlhf_pb2_grpc.RlhfServiceStub(channel)


@pytest.fixture
def outage(backends: Backends) -> Iterator[tuple[Outage, ServerThread]]:
    """A server of its own on a database that the test can make unreachable."""
    with outage_database(backends) as down:
        # The key stays cached, so the outage hits each RPC's own work rather than
        # authentication; a short pool timeout, as each call waits that long for a connection
        # that never comes.
        settings = server_settings(
            down.url, backends.redis_url, pool_timeout=0.5, auth_cache_seconds=600
        )
        running = ServerThread(settings)
        try:
            yield down, running
        finally:
            running.close()
