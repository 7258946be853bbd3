"""The client side of `zerodb-batch export interactions`: ExportInteractions' lines written out as
they arrive, so memory stays flat however large the export.

A file is written under a temporary name beside it and renamed once the export is complete: a
broken export never leaves a file that looks whole. An export with no lines is an empty file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf import timestamp_pb2
from tqdm import tqdm

from zerodb.v1 import rlhf_pb2, rlhf_pb2_grpc
from zerodb_batch import channel
from zerodb_batch.config import ClientSettings
from zerodb_batch.limits import EXPORT_FORMATS, FEEDBACK

# A message holds about 1 MiB of lines plus the line that passed it; one line can be a few MiB.
_MAX_MESSAGE_BYTES = 64 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line of `export interactions` (its filters are ListInteractions')."""
    parser.add_argument("--project", required=True, help="project id to export from")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="jsonl", help="line format")
    parser.add_argument("--output", type=Path, help="file to write (default: standard output)")
    parser.add_argument("--target", default="localhost:50051", help="server address")
    parser.add_argument("--api-key", help="API key (default: $ZERODB_API_KEY)")
    channel.add_arguments(parser)
    parser.add_argument("--feedback", choices=FEEDBACK, help="only this feedback")
    parser.add_argument("--model", help="only this model")
    parser.add_argument("--session-id", help="only this session")
    parser.add_argument("--agent-id", help="only this agent")
    parser.add_argument("--reward-min", type=float, help="only rewards of at least this")
    parser.add_argument("--reward-max", type=float, help="only rewards of at most this")
    parser.add_argument(
        "--tag", action="append", default=[], help="only interactions with one of these tags"
    )
    parser.add_argument(
        "--start-time", type=iso_time, help="only logged at or after this ISO 8601 time (UTC)"
    )
    parser.add_argument(
        "--end-time", type=iso_time, help="only logged before this ISO 8601 time (UTC)"
    )


def iso_time(text: str) -> timestamp_pb2.Timestamp:
    """An ISO 8601 time; one without a UTC offset is taken as UTC."""
    when = datetime.fromisoformat(text)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when if when.tzinfo else when.replace(tzinfo=UTC))
    return ts


def request_of(args: argparse.Namespace) -> rlhf_pb2.ExportInteractionsRequest:
    request = rlhf_pb2.ExportInteractionsRequest(
        project_id=args.project,
        format=args.format,
        feedback=args.feedback or "",
        model=args.model or "",
        session_id=args.session_id or "",
        agent_id=args.agent_id or "",
        tags=args.tag,
    )
    for name in ("reward_min", "reward_max"):
        if getattr(args, name) is not None:
            setattr(request, name, getattr(args, name))
    for name in ("start_time", "end_time"):
        if getattr(args, name) is not None:
            getattr(request, name).CopyFrom(getattr(args, name))
    return request


def write_lines(
    responses: Iterable[rlhf_pb2.ExportInteractionsResponse], out: TextIO, bar: tqdm[Any]
) -> int:
    """Write every line as its message arrives; how many there were."""
    written = 0
    for response in responses:
        if lines := response.lines:
            out.write("\n".join(lines))
            out.write("\n")
            written += len(lines)
            bar.update(len(lines))
    return written


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    """Standard output, or a file that appears under its name only once it is complete."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("w", encoding="utf-8") as file:
            yield file
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def run_cli(args: argparse.Namespace, settings: ClientSettings) -> int:
    """0 when the export is complete, 2 when it could not run or broke off."""
    key = args.api_key or settings.api_key
    if not key:
        print("zerodb-batch: no API key: pass --api-key or set ZERODB_API_KEY", file=sys.stderr)
        return 2
    if problem := channel.problem(args):
        print(f"zerodb-batch: {problem}", file=sys.stderr)
        return 2
    options = [("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES)]
    with channel.open_channel(args, options) as grpc_channel:
        stub = rlhf_pb2_grpc.RlhfServiceStub(grpc_channel)
        calls = stub.ExportInteractions(request_of(args), metadata=(("x-api-key", key),))
        progress = tqdm(unit=" lines", disable=not sys.stderr.isatty(), file=sys.stderr)
        try:
            with progress as bar, _output(args.output) as out:
                written = write_lines(calls, out, bar)
        except grpc.RpcError as e:
            print(f"zerodb-batch: {e.code().name}: {e.details()}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # the reader of standard output stopped reading (`| head`)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error
            return 1
    print(f"exported {written} lines ({args.format})", file=sys.stderr)
    return 0
