"""The server's commands: serve, migrate and keys (see cli.py, which imports this module only
when one of them runs)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import TypeVar

from zerodb_batch import app as app_module
from zerodb_batch import workers
from zerodb_batch.config import Settings
from zerodb_batch.embedded import Embedded, EmbeddedBusy, EmbeddedError, EmbeddedPostgres
from zerodb_batch.errors import StartupError
from zerodb_batch.limits import KEY_SCOPES
from zerodb_batch.storage import keys
from zerodb_batch.storage.migrate import migrate
from zerodb_batch.storage.pool import Conn, single_connection

T = TypeVar("T")
log = logging.getLogger("zerodb_batch")

SUPERVISE_SECONDS = 1.0  # how often the embedded servers are checked for a death


# ---- serve -------------------------------------------------------------------------------


def serve(settings: Settings, args: argparse.Namespace) -> None:
    if args.http is not None:
        settings = settings.with_http(args.http)
    if args.workers is not None:
        if not 1 <= args.workers <= 256:
            raise StartupError("--workers must be from 1 to 256")
        settings = replace(settings, workers=args.workers)
    if settings.database_url and settings.redis_url:
        _run(settings, None)
        return
    with Embedded(settings.data_dir) as embedded:
        backends = settings.with_backends(
            settings.database_url or embedded.database_url,
            settings.redis_url or embedded.redis_url,
        )
        _run(backends, embedded)


def _run(settings: Settings, embedded: Embedded | None) -> None:
    if settings.workers == 1:
        asyncio.run(_serve(settings, embedded))
    elif embedded is None:
        workers.serve(settings)
    else:
        workers.serve(settings, lambda: _restart_dead(embedded))


async def _serve(settings: Settings, embedded: Embedded | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running = await app_module.start(settings)
    _announce(running)
    if embedded is not None:
        running.tasks.append(asyncio.create_task(_supervise(embedded)))
    await stop.wait()
    log.info("draining (up to %.0f s)", settings.drain_seconds)
    await running.stop()
    log.info("stopped")


def _announce(running: app_module.App) -> None:
    tls = running.settings.tls
    security = "plaintext" if tls is None else "mutual TLS" if tls.mutual else "TLS"
    print(f"zerodb-batch serving on {_address(running)} ({security})", flush=True)
    if running.http_port is not None:
        host = running.settings.http_listen.rpartition(":")[0]
        scheme = "http" if tls is None else "https"
        print(f"HTTP/JSON on {scheme}://{host}:{running.http_port}", flush=True)
    if running.bootstrap_key:
        project, key = running.bootstrap_key
        print("first start: created a project and a development API key (shown once)")
        print(f"project_id: {project}")
        print(f"api_key: {key}", flush=True)


def _address(running: app_module.App) -> str:
    host = running.settings.listen.rsplit(":", 1)[0]
    return f"{host}:{running.port}"


async def _supervise(embedded: Embedded) -> None:
    """Restart an embedded server that died. Meanwhile calls answer UNAVAILABLE (PostgreSQL) or
    leave events in the outbox (Valkey); the pool replaces its broken connections by itself."""
    while True:
        await asyncio.sleep(SUPERVISE_SECONDS)
        await asyncio.to_thread(_restart_dead, embedded)


def _restart_dead(embedded: Embedded) -> None:
    restarts = {
        "PostgreSQL": embedded.postgres.restart_if_dead,
        "Valkey": embedded.valkey.restart_if_dead,
    }
    for name, restart_if_dead in restarts.items():
        try:
            if restart_if_dead():
                log.warning("embedded %s had stopped; restarted it", name)
        except EmbeddedError as e:
            log.error("embedded %s could not be restarted; trying again: %s", name, e)


# ---- maintenance commands ----------------------------------------------------------------


@contextmanager
def _database(settings: Settings) -> Iterator[str]:
    """A database URL: the configured one, the running server's embedded one, or a fresh start."""
    if settings.database_url:
        yield settings.database_url
        return
    try:
        with Embedded(settings.data_dir) as embedded:
            yield embedded.database_url
    except EmbeddedBusy:
        # `serve` holds the data dir: use its PostgreSQL and leave it running.
        yield EmbeddedPostgres(settings.data_dir).start()


def _with_conn(settings: Settings, work: Callable[[Conn], Awaitable[T]]) -> T:
    async def run(url: str) -> T:
        async with single_connection(url) as conn:
            await migrate(conn)
            return await work(conn)

    with _database(settings) as url:
        return asyncio.run(run(url))


def migrate_database(settings: Settings, _: argparse.Namespace) -> None:
    async def noop(conn: Conn) -> None:
        return None

    _with_conn(settings, noop)
    print("migrations applied")


def keys_create(settings: Settings, args: argparse.Namespace) -> None:
    async def work(conn: Conn) -> tuple[str, str, str]:
        project = args.project or await keys.create_project(conn)
        scopes = tuple(args.scope or KEY_SCOPES)
        key_id, key = await keys.create_key(conn, project, args.name, scopes, args.expires_in)
        return project, key_id, key

    project, key_id, key = _with_conn(settings, work)
    print(f"project_id: {project}\nkey_id: {key_id}\napi_key: {key}")


def keys_list(settings: Settings, args: argparse.Namespace) -> None:
    found = _with_conn(settings, lambda conn: keys.list_keys(conn, args.project))
    now = datetime.now(UTC)
    for k in found:
        if k.revoke_time:
            state = f"revoked {k.revoke_time:%Y-%m-%d %H:%M}"
        elif k.expire_time:
            verb = "expired" if k.expire_time <= now else "expires"
            state = f"{verb} {k.expire_time.astimezone(UTC):%Y-%m-%d %H:%M}Z"
        else:
            state = "active"
        print(f"{k.key_id}  {k.prefix}…  {','.join(k.scopes)}  {state}  {k.name}")


def keys_revoke(settings: Settings, args: argparse.Namespace) -> None:
    if not _with_conn(settings, lambda conn: keys.revoke_key(conn, args.key_id)):
        print(f"zerodb-batch: no active key {args.key_id}", file=sys.stderr)
        sys.exit(1)
    print(f"revoked {args.key_id}")
