"""The client commands' channel to a running server (`load`, `export`): plaintext, or TLS with
`--cacert` (and `--cert`/`--key` for a server that demands client certificates)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cacert",
        type=Path,
        help="connect with TLS, trusting the server certificates this PEM file of CAs signed "
        "(default: plaintext)",
    )
    parser.add_argument("--cert", type=Path, help="client certificate (PEM), for mutual TLS")
    parser.add_argument("--key", type=Path, help="the client certificate's private key (PEM)")


def problem(args: argparse.Namespace) -> str | None:
    """Why the TLS arguments cannot be used, or None."""
    if (args.cert is None) != (args.key is None):
        return "--cert and --key go together"
    if args.cert is not None and args.cacert is None:
        return "--cert needs --cacert (a client certificate is sent only over TLS)"
    for path in (args.cacert, args.cert, args.key):
        if path is not None and not path.is_file():
            return f"cannot read {path}"
    return None


def open_channel(args: argparse.Namespace, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A channel to `args.target`, with TLS when `args.cacert` is set."""
    if args.cacert is None:
        return grpc.insecure_channel(args.target, options=options)
    key = args.key.read_bytes() if args.key else None
    cert = args.cert.read_bytes() if args.cert else None
    credentials = grpc.ssl_channel_credentials(args.cacert.read_bytes(), key, cert)
    return grpc.secure_channel(args.target, credentials, options=options)
