"""A streamed load through StreamUpsertMemories vs a raw psycopg binary COPY of the same rows.

Records: ~200 bytes of content, 3 tags, small metadata, client-chosen ids. The service path
streams chunks (the loader CLI's default size) to `zerodb-batch serve` (a subprocess on
loopback), which validates each chunk, COPYs it into `memories` (through a staging table and an
upsert once an id exists) and commits it with the load's progress. The raw path is one binary
COPY straight into the same table in one transaction: no validation, no upsert semantics, no
progress, no network. Each round starts from an empty table.

Each round streams the records twice: with each record's metadata as a Struct, then as JSON
text (`metadata_json`, which the loader CLI sends), so the server's CPU per record shows what a
Struct costs it. The client encodes the text per record, as the raw path's Jsonb does.

The server's resident memory is read from /proc when the 100,000th record is sent and at the end
of each load (it must not grow with the stream), and its CPU time per record is printed too.

    python -m bench.memory_stream [--records 200000] [--chunk-size 1000] [--rounds 1]
    python -m bench.memory_stream --records 1000000      # the issue's full size
    python -m bench.memory_stream --loader               # + `zerodb-batch load memories FILE`

With `--loader` each round also writes the records to a JSON-lines file and loads it with the
CLI (a subprocess: read, parse, send, end to end), reported against the RPC's own rate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import partial

import grpc
import psycopg
from psycopg.types.json import Jsonb

from bench.harness import Rss, Service, backends, record, report, server_cpu, service, timed
from zerodb.v1 import memory_pb2, memory_pb2_grpc
from zerodb_batch.loader import DEFAULT_CHUNKING

FILLER = "x" * 200
TAGS = ["bench", "load", "memory"]
METADATA = {"source": "bench", "kind": "fact", "v": 1}
RSS_MARK = 100_000
COLUMNS = "project_id, id, content, memory_type, importance, tags, metadata, session_id"
TYPES = ["text", "text", "text", "text", "float8", "text[]", "jsonb", "text"]


def content(i: int) -> str:
    text = f"memory {i}: "
    return text + FILLER[: 200 - len(text)]


def chunks(
    project_id: str, load_id: str, records: int, size: int, rss: Rss, as_text: bool = False
) -> Iterator[memory_pb2.StreamUpsertMemoriesRequest]:
    """The load's messages, built as a client would, from a template (cheap for the client).
    With `as_text` each record's metadata is JSON text (`metadata_json`, as the loader CLI sends
    it), encoded per record as the raw path's Jsonb is; else a Struct."""
    template = memory_pb2.StreamUpsertMemoriesRequest(project_id=project_id, load_id=load_id)
    for _ in range(size):
        m = template.records.add(memory_type="semantic", importance=0.7, tags=TAGS)
        if not as_text:
            m.metadata.update(METADATA)
    for offset, start in enumerate(range(0, records, size)):
        message = memory_pb2.StreamUpsertMemoriesRequest()
        message.CopyFrom(template)
        message.offset = offset
        n = min(size, records - start)
        del message.records[n:]
        for k, memory in enumerate(message.records):
            memory.id = f"m{start + k:09d}"
            memory.content = content(start + k)
            if as_text:
                memory.metadata_json = json.dumps(METADATA)
        if start < RSS_MARK <= start + size:
            rss.sample(f"{RSS_MARK // 1000}k" + (" (text)" if as_text else ""))
        yield message


def service_load(
    svc: Service, records: int, size: int, rss: Rss, tag: str, as_text: bool = False
) -> None:
    with grpc.insecure_channel(svc.address) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        reply = stub.StreamUpsertMemories(
            chunks(svc.project_id, f"bench-{tag}", records, size, rss, as_text),
            metadata=(("x-api-key", svc.api_key),),
        )
    assert reply.load.inserted == records, reply.load
    rss.sample("end" + (" (text)" if as_text else ""))


def raw_load(conn: psycopg.Connection[tuple[object, ...]], records: int) -> None:
    with (
        conn.transaction(),
        conn.cursor().copy(f"COPY memories ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(TYPES)
        for i in range(records):
            copy.write_row(
                ("raw", f"m{i:09d}", content(i), "semantic", 0.7, TAGS, Jsonb(METADATA), None)
            )


def jsonl(path: str, records: int) -> None:
    """The same records as `chunks` makes, as lines of the seed's keys."""
    with open(path, "w") as out:
        for i in range(records):
            line = {"id": f"m{i:09d}", "content": content(i), "memory_type": "semantic",
                    "importance": 0.7, "tags": TAGS, "metadata": METADATA}  # fmt: skip
            out.write(json.dumps(line) + "\n")


def cli_load(svc: Service, path: str, tag: str) -> None:
    command = [sys.executable, "-m", "zerodb_batch", "load", "memories", path, "--project",
               svc.project_id, "--target", svc.address, "--load-id", f"cli-{tag}"]  # fmt: skip
    env = {**os.environ, "ZERODB_API_KEY": svc.api_key}
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)


def cpu_report(metadata: str, seconds: list[float]) -> None:
    """The server's CPU per record, printed and kept with the results (not charted: a cost)."""
    us = [s * 1e6 for s in seconds]
    print(f"  server CPU per record: {statistics.median(us):.1f} µs")
    record({"title": f"server CPU per streamed record, metadata as {metadata}", "unit": "µs",
            "chart": False, "value": statistics.median(us), "rounds": us})  # fmt: skip


def empty(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Each load starts from an empty table and a fresh checkpoint, so neither pays the other's."""
    conn.execute("TRUNCATE memories")
    conn.execute("CHECKPOINT")


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--records", type=int, default=200_000)
    args.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNKING.records)
    args.add_argument("--rounds", type=int, default=1)
    args.add_argument("--loader", action="store_true", help="also time the loader CLI")
    opts = args.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="zdb-bench-jsonl-") as tmp,
        backends() as (db_url, redis_url),
        service(db_url, redis_url) as svc,
        psycopg.connect(db_url, autocommit=True) as conn,
    ):
        ours, raw, cpu_per_record, rss, cli = [], [], [], Rss(svc.pid), []
        text, text_cpu = [], []  # metadata as JSON text
        path = os.path.join(tmp, "memories.jsonl")
        if opts.loader:
            jsonl(path, opts.records)
        rss.sample("idle")
        for n in range(opts.rounds):
            empty(conn)
            cpu = server_cpu(svc.pid)
            load = partial(service_load, svc, opts.records, opts.chunk_size, rss)
            ours.append(opts.records / timed(partial(load, str(n))))
            cpu_per_record.append((server_cpu(svc.pid) - cpu) / opts.records)
            empty(conn)
            cpu = server_cpu(svc.pid)
            load = partial(load, f"{n}-text", as_text=True)
            text.append(opts.records / timed(load))
            text_cpu.append((server_cpu(svc.pid) - cpu) / opts.records)
            empty(conn)
            raw.append(opts.records / timed(partial(raw_load, conn, opts.records)))
            if opts.loader:
                empty(conn)
                cli.append(opts.records / timed(partial(cli_load, svc, path, str(n))))
        report(
            f"Streamed load of {opts.records:,} memories, {opts.chunk_size} a chunk "
            "(service: StreamUpsertMemories; raw: one binary COPY)",
            "records/s",
            ours,
            raw,
        )
        cpu_report("Struct", cpu_per_record)
        report(
            "The same, each record's metadata sent as JSON text (metadata_json, as the loader "
            "sends it) rather than a Struct",
            "records/s",
            text,
            raw,
        )
        cpu_report("JSON text", text_cpu)
        if opts.loader:
            report(
                f"`zerodb-batch load memories` of a {opts.records:,}-line file, end to end, vs "
                "the stream RPC fed from memory",
                "records/s",
                cli,
                ours,
                names=("loader CLI", "stream RPC"),
            )
        rss.report()


if __name__ == "__main__":
    main()
