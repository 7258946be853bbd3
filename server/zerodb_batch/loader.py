"""The bulk loader: a JSON-lines file of records streamed through a `Stream*` RPC.

Which RPC, and how a line becomes a record, is the load's `Kind` (see load_kinds.py); the rest is
the same for every kind.

Each record is serialized once, as its line is parsed, and a chunk's message is its header's
bytes followed by its records' (a message's fields may come in any order, and repeated ones add
up): no chunk message is built and copied record by record. A thread of its own parses the file
a few chunks ahead of the stream, so parsing goes on while gRPC sends and waits on the server.

The file is cut into chunks deterministically: only good lines count, and a chunk closes at
`Chunking.records` records or before its encoded records would pass `Chunking.bytes`, so chunk n
holds the same records on every run. That is what makes a load resumable: after a broken stream
(or with `--resume`, in a new process) the loader asks GetLoad for the next offset, skips that
many chunks of the file and streams the rest; the server skips any chunk it already has. The
default load id is a hash of the file's bytes and the chunking, so an offset is only ever resumed
against the very chunks it counted. Bad lines are reported with their line numbers and left out;
the rest load.
"""

from __future__ import annotations

import hashlib
import itertools
import queue
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from tqdm import tqdm

from zerodb.v1 import load_pb2, load_pb2_grpc
from zerodb_batch import channel
from zerodb_batch.config import ClientSettings
from zerodb_batch.domain import wire
from zerodb_batch.limits import MAX_STREAM_CHUNK_RECORDS as MAX_CHUNK_RECORDS

DEFAULT_CHUNK_BYTES = 8 << 20
# A chunk is one gRPC message, and servers take 64 MiB by default: the cap stays well below.
# Every record the server accepts encodes to well under 1 MiB, so none is ever alone over it.
MIN_CHUNK_BYTES, MAX_CHUNK_BYTES = 1 << 20, 48 << 20

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)


class LoaderError(Exception):
    """The load cannot go on; the message says why, for a human."""


class BadLine(ValueError):
    """A line that is not a record of the load's kind."""


@dataclass(frozen=True)
class Kind:
    """One kind of streamed load, as the client sees it."""

    name: str  # the CLI's word (`load memories`) and the default load id's prefix
    method: str  # the Stream* RPC, e.g. /zerodb.v1.MemoryService/StreamUpsertMemories
    request_type: type[Message]  # its chunk message
    response_type: type[Message]  # its response (load, failures, chunk counts)
    records_field: str  # the chunk's repeated field of records
    parse_line: Callable[[str], Message]  # JSON text -> record; BadLine if it is not one


@dataclass(frozen=True)
class Chunking:
    """How a file is cut into chunks; part of the default load id, since offsets depend on it."""

    records: int = 1000  # at most this many records to a chunk
    bytes: int = DEFAULT_CHUNK_BYTES  # and at most this many bytes of encoded records


DEFAULT_CHUNKING = Chunking()


@dataclass(frozen=True)
class Chunk:
    offset: int
    records: list[bytes]  # each record serialized (without the chunk message's framing)
    lines: array[int]  # the file line of each record
    last_line: int  # the last line read for this chunk (bad and blank lines included)


@dataclass
class Outcome:
    """What a finished load did, for the summary and the exit status."""

    load: load_pb2.Load
    bad_lines: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)  # (line, why) refused records

    @property
    def complete(self) -> bool:
        return self.bad_lines == 0 and self.load.failed == 0


def default_load_id(
    path: Path, chunking: Chunking, kind: Kind, fields: Mapping[str, str] | None = None
) -> str:
    """The same bytes cut the same way into the same place (`fields`: a table, a namespace) are
    the same load, wherever the file lies or is called: a moved file resumes, and a changed one
    is a new load rather than a resume of the old."""
    with path.open("rb") as file:
        content = hashlib.file_digest(file, "sha256")  # read in blocks: memory stays flat
    content.update(f"\0{chunking.records}\0{chunking.bytes}".encode())
    for name, value in sorted((fields or {}).items()):
        content.update(f"\0{name}={value}".encode())
    return f"{kind.name}-{content.hexdigest()[:32]}"


def read_chunks(
    path: Path,
    chunking: Chunking,
    parse_line: Callable[[str], Message],
    on_bad: Callable[[int, str], None],
) -> Iterator[Chunk]:
    """The file's chunks, in order; bad lines go to `on_bad` and never into a chunk."""
    records: list[bytes] = []
    lines: array[int] = array("I")
    offset = number = size = 0
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            try:
                record = parse_line(_decode(raw)).SerializeToString()
                encoded = _encoded_size(record, chunking)
            except BadLine as e:
                on_bad(number, str(e))
                continue
            if records and size + encoded > chunking.bytes:
                yield Chunk(offset, records, lines, number - 1)
                records, lines, offset, size = [], array("I"), offset + 1, 0
            records.append(record)
            lines.append(number)
            size += encoded
            if len(records) == chunking.records:
                yield Chunk(offset, records, lines, number)
                records, lines, offset, size = [], array("I"), offset + 1, 0
    if records:
        yield Chunk(offset, records, lines, number)


def _encoded_size(record: bytes, chunking: Chunking) -> int:
    """The record's bytes in a chunk message (field tag and length included)."""
    size = len(record)
    framed = 1 + (max(size.bit_length(), 1) + 6) // 7 + size  # tag, varint length, record
    if framed > chunking.bytes:
        raise BadLine(f"{framed} bytes encoded, more than a whole chunk ({chunking.bytes} bytes)")
    return framed


def chunk_message(kind: Kind, chunk: Chunk, header: Message) -> bytes:
    """The chunk's request message, serialized: `header` (its fields other than the records),
    then each record as the repeated field `kind.records_field` frames it."""
    number = kind.request_type.DESCRIPTOR.fields_by_name[kind.records_field].number
    record_tag = wire.tag(number, wire.LENGTH_DELIMITED)
    return header.SerializeToString() + b"".join(
        [b"".join((record_tag, wire.varint(len(record)), record)) for record in chunk.records]
    )


def _decode(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as e:
        raise BadLine(f"not UTF-8 (byte {e.start + 1})") from e


def count_lines(path: Path) -> int:
    with path.open("rb") as file:
        return sum(block.count(b"\n") for block in iter(lambda: file.read(1 << 20), b""))


class Loader:
    """Streams one file as one load; resumes from GetLoad when the stream breaks."""

    def __init__(
        self,
        channel: grpc.Channel,
        kind: Kind,
        project_id: str,
        api_key: str,
        load_id: str,
        chunking: Chunking = DEFAULT_CHUNKING,
        *,
        fields: Mapping[str, str] | None = None,
        retries: int = 5,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        progress: bool = True,
    ) -> None:
        self._kind = kind
        self._stream = channel.stream_unary(
            kind.method,
            request_serializer=bytes,  # chunk messages go out already serialized
            response_deserializer=kind.response_type.FromString,
        )
        self._loads = load_pb2_grpc.LoadServiceStub(channel)
        self._project_id, self._load_id, self._chunking = project_id, load_id, chunking
        self._fields = dict(fields or {})  # chunk fields of the kind: a table, a namespace
        self._auth = (("x-api-key", api_key),)
        self._retries, self._backoff, self._sleep = retries, backoff, sleep
        self._progress = progress
        self._bad: dict[int, str] = {}  # reported once each, however often the file is read
        self._lines: dict[int, array[int]] = {}  # chunk offset -> record lines, this stream

    def run(self, path: Path, *, resume: bool) -> Outcome:
        if next(self._chunks(path, self._report_bad), None) is None:
            raise LoaderError(f"{path} holds no valid record; nothing to load")
        start = self._resumed(path) if resume else self._fresh()
        with tqdm(
            total=count_lines(path),
            unit=" rec",
            unit_scale=True,
            disable=not self._progress,
            desc=f"load {self._load_id}",
            file=sys.stderr,
        ) as bar:
            response = self._stream_with_retries(path, start, bar)
        return self._outcome(response)

    def committed_offset(self) -> int:
        """The offset to send next, by GetLoad; 0 for a load with nothing committed."""
        load = self._get_load()
        return load.next_offset if load is not None else 0

    def _get_load(self) -> load_pb2.Load | None:
        request = load_pb2.GetLoadRequest(project_id=self._project_id, load_id=self._load_id)
        try:
            return self._loads.GetLoad(request, metadata=self._auth).load
        except grpc.RpcError as e:
            if e.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def _resumed(self, path: Path) -> int:
        """--resume continues a load; with none to continue, saying so beats loading afresh."""
        load = self._get_load()
        if load is None or not load.next_offset:
            raise LoaderError(
                f"load {self._load_id!r} has no committed chunk: nothing to resume. The default "
                "load id follows the file's content and chunking, so a changed file (or another "
                "--chunk-size or --chunk-bytes) is a new load; run without --resume to start it"
            )
        self._check_same_chunks(path, load)
        return load.next_offset

    def _check_same_chunks(self, path: Path, load: load_pb2.Load) -> None:
        """Offsets only mean something with the file and chunking that made them: with another
        chunking (say, an explicit --load-id resumed without the --chunk-size it was started
        with), skipping the committed offsets would skip records that were never loaded. Every
        record of a committed chunk was counted (inserted, updated or failed: the loader sends
        partial_success), so the counts must match the records of those chunks here."""
        here = sum(
            len(chunk.records)
            for chunk in itertools.takewhile(
                lambda c: c.offset < load.next_offset,
                self._chunks(path, lambda *_: None),
            )
        )
        counted = load.inserted + load.updated + load.failed
        if here != counted:
            raise LoaderError(
                f"load {self._load_id!r} committed {load.next_offset} chunk(s) holding {counted} "
                f"record(s), but the first {load.next_offset} chunk(s) of {path} hold {here} with "
                f"--chunk-size {self._chunking.records} --chunk-bytes {self._chunking.bytes}: "
                "resume with the file and chunking the load was started with (the default "
                "--chunk-size was 500 before 1000)"
            )

    def _chunks(self, path: Path, on_bad: Callable[[int, str], None]) -> Iterator[Chunk]:
        return read_chunks(path, self._chunking, self._kind.parse_line, on_bad)

    def _fresh(self) -> int:
        """A new load must not silently continue an old one: that is what --resume is for."""
        if committed := self.committed_offset():
            raise LoaderError(
                f"load {self._load_id!r} already has {committed} chunk(s) committed; "
                "pass --resume to continue it, or --load-id for a new load"
            )
        return 0

    def _stream_with_retries(self, path: Path, start: int, bar: tqdm[Any]) -> Any:
        failures = 0
        while True:
            ahead = Prefetch(self._messages(path, start))
            try:
                return self._stream(self._requests(ahead, bar), metadata=self._auth)
            except grpc.RpcError as e:
                failures += 1
                if e.code() not in _RETRYABLE or failures > self._retries:
                    raise
                delay = self._backoff * 2 ** (failures - 1)
                bar.write(f"stream broke ({e.code().name}); resuming in {delay:.1f}s")
                self._sleep(delay)
                resumed = self._resume_point(start)
                failures = 0 if resumed > start else failures  # progress resets the budget
                start = resumed
            finally:
                ahead.close()

    def _resume_point(self, start: int) -> int:
        try:
            return self.committed_offset()
        except grpc.RpcError as e:
            if e.code() not in _RETRYABLE:
                raise
            return start  # the server is still away: try the stream again from where we were

    def _messages(self, path: Path, start: int) -> Iterator[tuple[Chunk, bytes]]:
        """The chunks from `start` on, with their messages, the last one marked final (one chunk
        is held back until the next shows it was not the last). If none is left, the last
        committed chunk is sent again, marked final: the server skips it as a duplicate and the
        load is done."""
        last: Chunk | None = None
        pending: Chunk | None = None
        for chunk in self._chunks(path, self._report_bad):
            if chunk.offset < start:
                last = chunk
                continue
            if pending is not None:
                yield pending, self._message(pending)
            pending = chunk
        if (final := pending or last) is not None:
            yield final, self._message(final, final=True)

    def _requests(self, ahead: Iterable[tuple[Chunk, bytes]], bar: tqdm[Any]) -> Iterator[bytes]:
        self._lines = {}
        bar.reset()
        for chunk, message in ahead:
            bar.update(chunk.last_line - bar.n)
            self._lines[chunk.offset] = chunk.lines
            yield message

    def _message(self, chunk: Chunk, final: bool = False) -> bytes:
        header = self._kind.request_type(
            project_id=self._project_id,
            load_id=self._load_id,
            offset=chunk.offset,
            partial_success=True,  # a bad record is reported with its line; the rest load
            final=final,
            **self._fields,
        )
        return chunk_message(self._kind, chunk, header)

    def _report_bad(self, line: int, reason: str) -> None:
        if line not in self._bad:
            self._bad[line] = reason
            tqdm.write(f"line {line}: skipped: {reason}", file=sys.stderr)

    def _outcome(self, response: Any) -> Outcome:
        outcome = Outcome(response.load, bad_lines=len(self._bad))
        for failure in response.failures:
            lines = self._lines.get(failure.offset)
            line = lines[failure.index] if lines is not None else -1
            outcome.failures.append((line, _describe(failure.error)))
        return outcome


class Prefetch:
    """Iterates over `items` made by a thread of its own, up to `depth` ahead of the reader.

    The loader's chunks are parsed while gRPC sends the previous ones and waits for the server
    (flow control releases the GIL). An error in the thread is raised to the reader. close()
    stops the thread, whether or not the reader took everything (a broken stream does not).
    """

    _END: Any = object()

    def __init__(self, items: Iterator[Any], depth: int = 4) -> None:
        self._queue: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(items,), daemon=True)
        self._thread.start()

    def _fill(self, items: Iterator[Any]) -> None:
        try:
            for item in items:
                if not self._put(item, None):
                    return
        except BaseException as e:
            self._put(None, e)
            return
        self._put(self._END, None)

    def _put(self, item: Any, error: BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put((item, error), timeout=0.1)
                return True
            except queue.Full:
                continue  # the reader is behind: look at the stop flag now and then
        return False

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                item, error = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return  # closed: a reader left waiting (gRPC's, after the call) goes too
                continue
            if error is not None:
                raise error
            if item is self._END:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _describe(status: status_pb2.Status) -> str:
    """The field violations of a refused record, in one line."""
    bad = error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Unpack(bad):
            return "; ".join(f"{v.field}: {v.description}" for v in bad.field_violations)
    return str(status.message)


def run_cli(args: Any, settings: ClientSettings, kind: Kind, fields: Mapping[str, str]) -> int:
    """`zerodb-batch load KIND FILE`: 0 when every record loaded, 1 when some were left out
    (bad lines, refused records), 2 when the load could not run."""
    problem = _check_args(args, settings)
    if problem:
        print(f"zerodb-batch: {problem}", file=sys.stderr)
        return 2
    chunking = Chunking(args.chunk_size, args.chunk_bytes)
    load_id = args.load_id or default_load_id(args.file, chunking, kind, fields)
    print(f"load {load_id}: {args.file} -> {args.target}", file=sys.stderr)
    with channel.open_channel(args) as grpc_channel:
        loader = Loader(
            grpc_channel,
            kind,
            args.project,
            args.api_key or settings.api_key or "",
            load_id,
            chunking,
            fields=fields,
            progress=sys.stderr.isatty(),
        )
        try:
            outcome = loader.run(args.file, resume=args.resume)
        except LoaderError as e:
            print(f"zerodb-batch: {e}", file=sys.stderr)
            return 2
        except grpc.RpcError as e:
            print(f"zerodb-batch: {e.code().name}: {e.details()}", file=sys.stderr)
            return 2
    print(summary(outcome))
    return 0 if outcome.complete else 1


def _check_args(args: Any, settings: ClientSettings) -> str | None:
    if not (args.api_key or settings.api_key):
        return "no API key: pass --api-key or set ZERODB_API_KEY"
    if not 1 <= args.chunk_size <= MAX_CHUNK_RECORDS:
        return f"--chunk-size must be from 1 to {MAX_CHUNK_RECORDS}"
    if not MIN_CHUNK_BYTES <= args.chunk_bytes <= MAX_CHUNK_BYTES:
        return f"--chunk-bytes must be from {MIN_CHUNK_BYTES} to {MAX_CHUNK_BYTES}"
    if not args.file.is_file():
        return f"no such file: {args.file}"
    return channel.problem(args)


def summary(outcome: Outcome) -> str:
    """The closing report: counts of the whole load, then every record left out, by line."""
    load = outcome.load
    state = "done" if load.state == load_pb2.LOAD_STATE_DONE else "running"
    out = [
        f"load {load.load_id}: {state}",
        f"  records: {load.inserted} inserted, {load.updated} updated, {load.failed} refused",
        f"  chunks: {load.chunks_committed} committed, {load.chunks_skipped} skipped as "
        "already committed",
    ]
    if outcome.bad_lines:
        out.append(f"  bad lines (not sent): {outcome.bad_lines}, listed above")
    out.extend(f"  line {line}: refused: {why}" for line, why in outcome.failures)
    if load.failed > len(outcome.failures):
        out.append(f"  ({load.failed - len(outcome.failures)} refused records not listed)")
    return "\n".join(out)
