"""The `zerodb-batch` command: serve, migrate, keys create|list|revoke, load KIND FILE, export
interactions."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from zerodb_batch import channel, exporter, limits, load_kinds, loader
from zerodb_batch.config import DEFAULT_HTTP_LISTEN, ClientSettings, SettingError, Settings
from zerodb_batch.errors import StartupError
from zerodb_batch.observability import logs

Command = Callable[[Settings, argparse.Namespace], None]


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
    except (StartupError, SettingError) as e:  # EmbeddedError is a StartupError
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
    serve_cmd.set_defaults(run=_server("serve"))
    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(
        run=_server("migrate_database")
    )
    key_cmds = sub.add_parser("keys", help="manage API keys").add_subparsers(
        required=True, metavar="ACTION"
    )
    create = key_cmds.add_parser("create", help="make a key and print it (shown once)")
    create.add_argument("--project", help="project id (a new project when omitted)")
    create.add_argument("--name", default="", help="a label for the key")
    create.add_argument(
        "--scope",
        action="append",
        choices=limits.KEY_SCOPES,
        help="what the key may do; repeat for several "
        f"(default: all of {', '.join(limits.KEY_SCOPES)})",
    )
    create.add_argument(
        "--expires-in",
        type=_duration,
        metavar="DURATION",
        help="the key stops working after this long: a number with s, m, h or d (30m, 1h, 90d); "
        "default: never",
    )
    create.set_defaults(run=_server("keys_create"))
    listing = key_cmds.add_parser("list", help="list a project's keys (never the keys themselves)")
    listing.add_argument("--project", required=True)
    listing.set_defaults(run=_server("keys_list"))
    revoke = key_cmds.add_parser("revoke", help="revoke a key by its key id")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=_server("keys_revoke"))
    _add_load(sub)
    _add_export(sub)
    return parser


def _server(name: str) -> Command:
    """A command of commands.py (serve, migrate, keys), imported only when one runs: `load` and
    `export` are clients of a running server and need none of its modules, which take about a
    second to import."""

    def run(settings: Settings, args: argparse.Namespace) -> None:
        command: Command = getattr(importlib.import_module("zerodb_batch.commands"), name)
        command(settings, args)

    return run


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


def _loading(command: load_kinds.LoadCommand) -> Command:
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
