"""The `zerodb-batch` command: serve, migrate, keys create|list|revoke, load KIND FILE, export
interactions."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from zerodb_batch import app as app_module
from zerodb_batch import channel, exporter, load_kinds, loader, workers
from zerodb_batch.config import DEFAULT_HTTP_LISTEN, ClientSettings, SettingError, Settings
from zerodb_batch.embedded import Embedded, EmbeddedBusy, EmbeddedError, EmbeddedPostgres
from zerodb_batch.errors import StartupError
from zerodb_batch.observability import logs
from zerodb_batch.storage import keys
from zerodb_batch.storage.migrate import migrate
from zerodb_batch.storage.pool import Conn, single_connection

T = TypeVar("T")
log = logging.getLogger("zerodb_batch")

SUPERVISE_SECONDS = 1.0  # how often the embedded servers are checked for a death


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingError as e:
        print(f"zerodb-batch: {e}", file=sys.stderr)
        sys.exit(2)
    logs.configure(settings.log_level, settings.observability.log_format)
    try:
        args.run(settings, args)
    except (StartupError, EmbeddedError, SettingError) as e:
        print(f"zerodb-batch: {e}", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zerodb-batch", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    serve_cmd = sub.add_parser(
        "serve", help="serve gRPC and HTTP/JSON (embedded PostgreSQL/Valkey unless URLs are set)"
    )
    serve_cmd.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="HTTP/JSON listen address, or `off` (default: $ZERODB_HTTP_LISTEN or "
        f"{DEFAULT_HTTP_LISTEN})",
    )
    serve_cmd.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="server processes sharing the gRPC port (default: $ZERODB_WORKERS or 1)",
    )
    serve_cmd.set_defaults(run=serve)
    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(run=_migrate)
    key_cmds = sub.add_parser("keys", help="manage API keys").add_subparsers(
        required=True, metavar="ACTION"
    )
    create = key_cmds.add_parser("create", help="make a key and print it (shown once)")
    create.add_argument("--project", help="project id (a new project when omitted)")
    create.add_argument("--name", default="", help="a label for the key")
    create.add_argument(
        "--scope",
        action="append",
        choices=keys.SCOPES,
        help=f"what the key may do; repeat for several (default: all of {', '.join(keys.SCOPES)})",
    )
    create.add_argument(
        "--expires-in",
        type=_duration,
        metavar="DURATION",
        help="the key stops working after this long: a number with s, m, h or d (30m, 1h, 90d); "
        "default: never",
    )
    create.set_defaults(run=_keys_create)
    listing = key_cmds.add_parser("list", help="list a project's keys (never the keys themselves)")
    listing.add_argument("--project", required=True)
    listing.set_defaults(run=_keys_list)
    revoke = key_cmds.add_parser("revoke", help="revoke a key by its key id")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=_keys_revoke)
    _add_load(sub)
    _add_export(sub)
    return parser


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


def _migrate(settings: Settings, _: argparse.Namespace) -> None:
    async def noop(conn: Conn) -> None:
        return None

    _with_conn(settings, noop)
    print("migrations applied")


def _keys_create(settings: Settings, args: argparse.Namespace) -> None:
    async def work(conn: Conn) -> tuple[str, str, str]:
        project = args.project or await keys.create_project(conn)
        scopes = tuple(args.scope or keys.SCOPES)
        key_id, key = await keys.create_key(conn, project, args.name, scopes, args.expires_in)
        return project, key_id, key

    project, key_id, key = _with_conn(settings, work)
    print(f"project_id: {project}\nkey_id: {key_id}\napi_key: {key}")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(raw: str) -> timedelta:
    """`30m`, `1h`, `90d`: a positive count of seconds, minutes, hours or days."""
    count, unit = raw[:-1], raw[-1:].lower()
    if unit not in _UNITS or not count.isdigit() or int(count) <= 0:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not a duration: expected a positive whole number with s, m, h or d "
            "(30m, 1h, 90d)"
        )
    return timedelta(seconds=int(count) * _UNITS[unit])


def _keys_list(settings: Settings, args: argparse.Namespace) -> None:
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


def _keys_revoke(settings: Settings, args: argparse.Namespace) -> None:
    if not _with_conn(settings, lambda conn: keys.revoke_key(conn, args.key_id)):
        print(f"zerodb-batch: no active key {args.key_id}", file=sys.stderr)
        sys.exit(1)
    print(f"revoked {args.key_id}")


# ---- load (a client of a running server) ----------------------------------------------------


def _add_load(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kinds = sub.add_parser("load", help="bulk-load a file through a running server").add_subparsers(
        required=True, metavar="KIND"
    )
    for command in load_kinds.COMMANDS:
        parser = kinds.add_parser(command.kind.name, help=f"{command.help} (resumable)")
        command.add_arguments(parser)
        _add_load_arguments(parser)
        parser.set_defaults(run=_loading(command))


def _add_load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="one JSON record per line")
    parser.add_argument("--project", required=True, help="project id to load into")
    parser.add_argument("--target", default="localhost:50051", help="server address")
    parser.add_argument("--api-key", help="API key (default: $ZERODB_API_KEY)")
    channel.add_arguments(parser)
    parser.add_argument(
        "--load-id",
        help="name of the load (default: a hash of the file's content and the chunking). With "
        "your own id, resume it only with the same file and chunking (--resume checks the "
        "committed records against the file's chunks)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted load (an error if the load has no committed chunk)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=loader.DEFAULT_CHUNKING.records,
        help=f"records per chunk, at most (default {loader.DEFAULT_CHUNKING.records})",
    )
    parser.add_argument(
        "--chunk-bytes",
        type=int,
        default=loader.DEFAULT_CHUNK_BYTES,
        help=f"bytes of encoded records per chunk, at most (default {loader.DEFAULT_CHUNK_BYTES}; "
        f"{loader.MIN_CHUNK_BYTES} to {loader.MAX_CHUNK_BYTES})",
    )


def _loading(command: load_kinds.LoadCommand) -> Callable[[Settings, argparse.Namespace], None]:
    def run(_: Settings, args: argparse.Namespace) -> None:
        settings = ClientSettings.from_env()
        sys.exit(loader.run_cli(args, settings, command.kind, command.fields(args)))

    return run


# ---- export (a client of a running server) --------------------------------------------------


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kinds = sub.add_parser(
        "export", help="stream training data out of a running server"
    ).add_subparsers(required=True, metavar="KIND")
    parser = kinds.add_parser(
        "interactions", help="RLHF interactions as jsonl, trl, openai or openai-preference lines"
    )
    exporter.add_arguments(parser)
    parser.set_defaults(run=_export)


def _export(_: Settings, args: argparse.Namespace) -> None:
    sys.exit(exporter.run_cli(args, ClientSettings.from_env()))
