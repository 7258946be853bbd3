"""Wiring: pool, migrations, servicers, interceptor, health, reflection, observability,
background tasks, shutdown."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from zerodb.v1 import (
    event_pb2,
    event_pb2_grpc,
    load_pb2,
    load_pb2_grpc,
    memory_pb2,
    memory_pb2_grpc,
    rlhf_pb2,
    rlhf_pb2_grpc,
    table_pb2,
    table_pb2_grpc,
    vector_pb2,
    vector_pb2_grpc,
)
from zerodb_batch.api.event_service import EventServicer
from zerodb_batch.api.load_service import LoadServicer
from zerodb_batch.api.memory_service import MemoryServicer
from zerodb_batch.api.reflection import enable_reflection
from zerodb_batch.api.rlhf_service import RlhfServicer
from zerodb_batch.api.table_service import TableServicer
from zerodb_batch.api.vector_service import VectorServicer
from zerodb_batch.config import Settings
from zerodb_batch.domain.page_token import PageTokens
from zerodb_batch.errors import StartupError
from zerodb_batch.events.rate_limit import ProjectRateLimit
from zerodb_batch.events.relay import Relay
from zerodb_batch.events.streams import Streams
from zerodb_batch.http.door import Door
from zerodb_batch.interceptors.api_interceptor import ApiInterceptor
from zerodb_batch.interceptors.auth import Authenticator
from zerodb_batch.interceptors.overload import Admission
from zerodb_batch.monitor import PROBE_TIMEOUT, DependencyMonitor, DependencyState
from zerodb_batch.observability.calls import Observer
from zerodb_batch.observe import Observing, sources
from zerodb_batch.storage import idempotency, keys, shared_secrets, tables
from zerodb_batch.storage.migrate import migrate
from zerodb_batch.storage.pool import Conn, Database, open_database
from zerodb_batch.storage.probe import PostgresProbe
from zerodb_batch.storage.vector_index import IndexBuilder, IndexPolicy
from zerodb_batch.storage.vector_search import Tuning
from zerodb_batch.tls import TlsFiles

log = logging.getLogger(__name__)

SERVICES = tuple(
    module.DESCRIPTOR.services_by_name[name]
    for module, name in (
        (table_pb2, "TableService"),
        (memory_pb2, "MemoryService"),
        (vector_pb2, "VectorService"),
        (event_pb2, "EventService"),
        (rlhf_pb2, "RlhfService"),
        (load_pb2, "LoadService"),
    )
)
SERVICE_NAMES = tuple(service.full_name for service in SERVICES)


@dataclass
class App:
    """A running server; `port` is the bound port (useful with a listen address of port 0)."""

    settings: Settings
    db: Database
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    port: int = 0
    bootstrap_key: tuple[str, str] | None = None  # (project_id, key) made on first start
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    streams: tuple[Streams, ...] = ()
    events: EventServicer | None = None
    door: Door | None = None  # the HTTP/JSON door, when on
    monitor: DependencyMonitor | None = None
    observing: Observing | None = None
    admission: Admission | None = None
    stopped: bool = False

    @property
    def http_port(self) -> int | None:
        return self.door.port if self.door else None

    @property
    def metrics_port(self) -> int | None:
        """The port of ZERODB_METRICS_LISTEN's listener, when there is one."""
        listener = self.observing.listener if self.observing else None
        return listener.port if listener else None

    async def stop(self, grace: float | None = None) -> None:
        """Drain: stop taking calls, let running ones finish for `grace` seconds, then close.

        Subscriptions never finish on their own: they end first, UNAVAILABLE, so that clients
        resubscribe elsewhere and the drain waits only for unary calls."""
        if self.stopped:
            return
        self.stopped = True
        if self.door is not None:
            await self.door.stop_accepting()
        await self.health.enter_graceful_shutdown()
        if self.events is not None:
            await self.events.shut_down()
        await self.server.stop(self.settings.drain_seconds if grace is None else grace)
        if self.door is not None:
            await self.door.close()
        await _cancel(self.tasks)
        if self.observing is not None:
            await self.observing.close()
        for streams in self.streams:
            await streams.close()
        if self.admission is not None:
            await self.admission.close()
        if self.monitor is not None:
            await self.monitor.close()
        await self.db.close()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the background tasks, again while any is left: a cancel that lands as a wait
    inside psycopg's `notifies()` times out can be swallowed (asyncio.wait_for on 3.11)."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    await asyncio.gather(*tasks, return_exceptions=True)


async def start(settings: Settings) -> App:
    """Connect, migrate, and serve on `settings.listen`. Raises StartupError with a reason."""
    if not settings.database_url:
        raise StartupError("no database URL: start the embedded PostgreSQL first")
    if not settings.redis_url:
        raise StartupError("no Redis URL: start the embedded Valkey first")
    observing = Observing.begin(settings.observability)  # traces: before the first connection
    monitor = _monitor(settings.database_url, settings.redis_url, settings)
    db = await _open(settings)
    # No connection yet: a Redis that is down only delays events (the outbox keeps them).
    # Publishers and the relay have connections of their own: a crowd of subscriptions holding
    # blocking reads must not make publishers wait for one.
    maxlen = settings.event_stream_maxlen
    streams = Streams.open(settings.redis_url, maxlen, settings.max_subscriptions + 16)
    relay_streams = Streams.open(settings.redis_url, maxlen, settings.event_relay_redis_connections)
    relay = Relay(
        db,
        relay_streams,
        settings.database_url,
        settings.event_relay_poll_seconds,
        maxlen,
        observing.metrics,
    )
    admission = _admission(settings)
    try:
        bootstrap, tokens = await _prepare(db)
        events = EventServicer(db, tokens, streams, relay, settings.max_subscriptions)
        await observing.serve(sources(db, streams, relay_streams, monitor, events))
        builder = _index_builder(settings)
        server, health = await _build(
            settings, db, tokens, events, builder, observing.observer, admission
        )
        port = _bind(server, settings.listen, settings.tls)
        door_target = _private_port(server) if settings.http_enabled else None
        await server.start()
        door = await _open_door(settings, door_target, server, observing)
    except BaseException:
        await observing.close()
        await streams.close()
        await relay_streams.close()
        await admission.close()
        await monitor.close()
        await db.close()
        raise
    app = App(settings, db, server, health, port, bootstrap, streams=(streams, relay_streams))
    app.events, app.monitor, app.observing = events, monitor, observing
    app.admission = admission
    if observing.sampler is not None:
        app.tasks.append(asyncio.create_task(observing.sampler.run()))
    app.tasks.append(asyncio.create_task(_expire_requests(db, settings.idempotency_ttl_hours)))
    app.door = door
    app.tasks.append(asyncio.create_task(relay.run()))
    monitor.subscribe(functools.partial(_fail_fast, db))
    monitor.subscribe(functools.partial(_follow, health))
    app.tasks.append(asyncio.create_task(monitor.run()))
    app.tasks.append(asyncio.create_task(_sync_table_indexes(db)))
    app.tasks.append(asyncio.create_task(builder.run()))
    return app


def _admission(settings: Settings) -> Admission:
    """The cap of concurrent calls and, when set, each project's calls per second in Redis."""
    rate = None
    if settings.project_calls_per_second and settings.redis_url:
        rate = ProjectRateLimit(settings.redis_url, settings.project_calls_per_second)
    return Admission(settings.max_concurrent_calls, rate)


def _index_builder(settings: Settings) -> IndexBuilder:
    """The background HNSW index builder (one builds at a time across processes)."""
    policy = IndexPolicy(
        threshold=settings.vector_index_threshold,
        poll_seconds=settings.vector_index_poll_seconds,
    )
    return IndexBuilder(settings.database_url or "", policy)


def _monitor(database_url: str, redis_url: str, settings: Settings) -> DependencyMonitor:
    """The dependency monitor, probing on connections of its own (not the pool's: calls holding
    every pooled connection must not make PostgreSQL look down)."""
    postgres = PostgresProbe(database_url)
    redis = Streams.open(redis_url, settings.event_stream_maxlen, 1, socket_timeout=PROBE_TIMEOUT)
    closers = (postgres.close, redis.close)
    return DependencyMonitor(postgres, redis.ping, settings.health_probe_seconds, closers)


async def _fail_fast(db: Database, state: DependencyState) -> None:
    """While PostgreSQL is down, calls answer UNAVAILABLE at once rather than at the pool
    timeout; when it is back, the pool replaces its broken connections at once."""
    await db.reachable(state.postgres_up)


async def _follow(health: health_aio.HealthServicer, state: DependencyState) -> None:
    """Every service needs PostgreSQL (API keys live there), so all of them follow it.

    A Redis outage changes no status: publishing and ListEvents go on (the outbox keeps the
    events), only subscriptions and acks answer UNAVAILABLE, and every replica shares the one
    Redis, so a client sent elsewhere by NOT_SERVING would gain nothing and lose its publishes.
    """
    up = health_pb2.HealthCheckResponse.SERVING
    status = up if state.postgres_up else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", *SERVICE_NAMES):
        await health.set(name, status)


async def _open(settings: Settings) -> Database:
    try:
        return await open_database(
            settings.database_url or "", settings.pool_min, settings.pool_max, settings.pool_timeout
        )
    except Exception as e:
        raise StartupError(f"cannot connect to PostgreSQL: {e}") from e


async def _prepare(db: Database) -> tuple[tuple[str, str] | None, PageTokens]:
    """Apply migrations and read the page token key; on an empty store, make a project and a
    development key."""
    async with db.connection() as conn:
        bootstrap = await prepare_store(conn)
        tokens = PageTokens(await shared_secrets.shared_secret(conn, shared_secrets.PAGE_TOKENS))
        return bootstrap, tokens


async def prepare_store(conn: Conn) -> tuple[str, str] | None:
    """Apply migrations; on an empty store, make a project and a development key (returned)."""
    await migrate(conn)
    if await keys.count_projects(conn):
        return None
    async with conn.transaction():
        project = await keys.create_project(conn, name="development")
        _, key = await keys.create_key(conn, project, name="development key")
    return project, key


async def _build(
    settings: Settings,
    db: Database,
    tokens: PageTokens,
    event_service: EventServicer,
    builder: IndexBuilder,
    observer: Observer,
    admission: Admission,
) -> tuple[grpc.aio.Server, health_aio.HealthServicer]:
    authenticator = Authenticator(db, settings.auth_cache_seconds)
    server = grpc.aio.server(
        interceptors=[ApiInterceptor(authenticator, observer, admission)],
        options=[
            # A port in use is an error, not silent sharing; `serve --workers` checks the port
            # in its parent (workers.reserve) before its workers share it.
            ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
        ],
    )
    memory_pb2_grpc.add_MemoryServiceServicer_to_server(MemoryServicer(db, tokens), server)
    load_pb2_grpc.add_LoadServiceServicer_to_server(LoadServicer(db), server)
    event_pb2_grpc.add_EventServiceServicer_to_server(event_service, server)
    table_pb2_grpc.add_TableServiceServicer_to_server(
        TableServicer(db, tokens, settings.query_concurrency, settings.max_message_bytes), server
    )
    vector_pb2_grpc.add_VectorServiceServicer_to_server(
        VectorServicer(db, tokens, builder, Tuning(ef_search=settings.vector_ef_search)), server
    )
    rlhf_pb2_grpc.add_RlhfServiceServicer_to_server(RlhfServicer(db, tokens), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", *SERVICE_NAMES):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    enable_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server
    )
    return server, health


def _private_port(server: grpc.aio.Server) -> str:
    """A socket only this process knows, for the HTTP door's calls into the server."""
    target = f"unix-abstract:zerodb-batch-{os.getpid()}-{secrets.token_hex(8)}"
    if not server.add_insecure_port(target):
        raise StartupError("cannot open the HTTP door's private socket")
    return target


async def _open_door(
    settings: Settings, target: str | None, server: grpc.aio.Server, observing: Observing
) -> Door | None:
    if target is None:
        return None
    try:
        return await Door.start(
            settings.http_listen,
            target,
            SERVICES,
            settings.max_message_bytes,
            observing.route,
            settings.tls.server_context() if settings.tls else None,
        )
    except BaseException:
        await server.stop(0)
        raise


def _bind(server: grpc.aio.Server, listen: str, tls: TlsFiles | None) -> int:
    try:
        if tls is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, _credentials(tls))
    except RuntimeError as e:
        raise StartupError(f"cannot listen on {listen}: {e} (is the port in use?)") from e
    if port == 0:
        raise StartupError(f"cannot listen on {listen}: the address is in use or invalid")
    return int(port)


def _credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """TLS for the gRPC port; with a client CA, a client without a certificate it signed is
    refused in the handshake, before any call."""
    cert, key, client_ca = tls.pem()
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


async def _sync_table_indexes(db: Database) -> None:
    """Repair the table indexes a crash left half built or orphaned. In the background: a
    rebuild may take long, and queries give the same results without an index meanwhile."""
    try:
        async with db.connection() as conn:  # autocommit: indexes built CONCURRENTLY
            await tables.sync_indexes(conn)
    except Exception as e:  # the next start tries again
        log.warning("table index repair failed: %s", e)


async def _expire_requests(db: Database, hours: int) -> None:
    """Forget idempotency keys older than the TTL, hourly; a failed sweep waits for the next."""
    while True:
        try:
            async with db.connection() as conn:
                removed = await idempotency.expire(conn, hours)
            if removed:
                log.info("expired %d idempotency keys", removed)
        except Exception as e:  # PostgreSQL away: the next sweep catches up
            log.warning("idempotency key sweep failed: %s", e)
        await asyncio.sleep(3600)
