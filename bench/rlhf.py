"""RLHF interactions through our service vs the raw psycopg path, side by side in one run.

- batch: BatchCreateInteractions calls of 1000 interactions (prompt and response ~1 KB each, with
  newlines) vs the same INSERT ... unnest through psycopg, one transaction a batch. Each side's
  input is prepared before the clock starts (messages for us, parameter lists for psycopg).
- stream: a load through StreamCreateInteractions (the loader's chunk size) vs one binary COPY of
  the same rows in one transaction. Each load starts from an empty table.
- export: the streamed interactions through ExportInteractions in each format vs the same query
  through a psycopg server-side cursor in this process; interactions read per second, and the
  server's resident memory (its peak is reset before each export, so it is the export's own).

    python -m bench.rlhf [--calls 20] [--rounds 3] [--records 100000]
    python -m bench.rlhf --records 500000      # the issue's full size
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import grpc
import psycopg
from psycopg.types.json import Jsonb

from bench.harness import Rss, Service, backends, report, server_cpu, service, timed
from zerodb.v1 import rlhf_pb2, rlhf_pb2_grpc
from zerodb_batch.limits import EXPORT_FORMATS
from zerodb_batch.loader import DEFAULT_CHUNKING
from zerodb_batch.storage.interactions import export_query
from zerodb_batch.storage.unnest import flat_tags

BATCH = 1000
FEEDBACK = ("positive", "negative", "mixed")
TAGS = ["bench", "rlhf"]
METADATA = {"source": "bench", "temperature": 0.7}
_LINE = "The quick brown fox jumps over the lazy dog; async code waits without blocking.\n"
FILLER = (_LINE * 14)[:1000]  # ~1 KB with a newline every 80 characters
COLUMNS = ["project_id", "prompt", "response", "feedback", "reward", "model", "session_id",
           "agent_id", "human_feedback", "tags", "context", "metadata"]  # fmt: skip
TYPES = ["text", "text", "text", "text", "float8", "text", "text", "text", "text", "text[]",
         "text", "jsonb"]  # fmt: skip
# The raw INSERT: the statement BatchUpsertMemories uses, for these columns.
RAW_INSERT = """
INSERT INTO interactions (project_id, id, prompt, response, feedback, reward, model, session_id,
                          tags, metadata)
SELECT %(project_id)s, u.id, u.prompt, u.response, u.feedback, u.reward, u.model, u.session_id,
       COALESCE((%(tag_values)b::text[])[u.tag_from:u.tag_to], '{}'), u.metadata
FROM unnest(%(ids)b::uuid[], %(prompts)b::text[], %(responses)b::text[], %(feedback)b::text[],
            %(rewards)b::float8[], %(models)b::text[], %(session_ids)b::text[],
            %(tag_from)b::int4[], %(tag_to)b::int4[], %(metadata)b::jsonb[])
     AS u(id, prompt, response, feedback, reward, model, session_id, tag_from, tag_to, metadata)
"""


def record(i: int) -> dict[str, Any]:
    """Interaction i: three responses a prompt, every kind of feedback, a reward on two in three."""
    return {
        "prompt": f"Question {i // 3}:\n{FILLER}",
        "response": f"Answer {i}:\n{FILLER}",
        "feedback": FEEDBACK[i % 3],
        "reward": None if i % 3 == 2 else (i % 21) / 10 - 1,
        "model": "qwen-coder-32b",
        "session_id": f"s{i // 100}",
    }


def to_message(r: dict[str, Any], into: rlhf_pb2.Interaction) -> None:
    into.prompt, into.response = r["prompt"], r["response"]
    into.feedback, into.model, into.session_id = r["feedback"], r["model"], r["session_id"]
    if r["reward"] is not None:
        into.reward = r["reward"]
    into.tags.extend(TAGS)
    into.metadata.update(METADATA)


def batch_request(project_id: str, start: int) -> rlhf_pb2.BatchCreateInteractionsRequest:
    request = rlhf_pb2.BatchCreateInteractionsRequest(project_id=project_id)
    for i in range(start, start + BATCH):
        to_message(record(i), request.interactions.add())
    return request


def raw_rows(project_id: str, start: int) -> list[tuple[object, ...]]:
    """The batch as a psycopg user would COPY it: COLUMNS plus the id (the service makes ids)."""
    out = []
    for i in range(start, start + BATCH):
        r = record(i)
        out.append(
            (project_id, r["prompt"], r["response"], r["feedback"], r["reward"], r["model"],
             r["session_id"], None, None, TAGS, None, Jsonb(METADATA), uuid.uuid4())
        )  # fmt: skip
    return out


def raw_params(rows: list[tuple[Any, ...]]) -> dict[str, object]:
    """The same rows as the binary arrays of RAW_INSERT."""
    return {
        "project_id": rows[0][0],
        "ids": [str(r[12]) for r in rows],
        "prompts": [r[1] for r in rows],
        "responses": [r[2] for r in rows],
        "feedback": [r[3] for r in rows],
        "rewards": [r[4] for r in rows],
        "models": [r[5] for r in rows],
        "session_ids": [r[6] for r in rows],
        **flat_tags([r[9] for r in rows]),
        "metadata": [json.dumps(METADATA)] * len(rows),
    }


def raw_copy(conn: Conn, rows: Iterable[tuple[object, ...]], *, with_ids: bool) -> None:
    """One binary COPY in one transaction."""
    columns, types = ([*COLUMNS, "id"], [*TYPES, "uuid"]) if with_ids else (COLUMNS, TYPES)
    statement = f"COPY interactions ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    with conn.transaction(), conn.cursor().copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row if with_ids else row[:-1])


def bench_batches(svc: Service, conn: Conn, calls: int, rounds: int) -> None:
    """Two raw paths: a binary COPY of each batch (the service COPYs text), and the INSERT ...
    unnest of binary arrays that BatchUpsertMemories uses."""
    stub = rlhf_pb2_grpc.RlhfServiceStub(_channel(svc))
    auth = (("x-api-key", svc.api_key),)
    raw_project = str(uuid.uuid4())

    def ours(n: int) -> Callable[[], None]:
        requests = [batch_request(svc.project_id, c * BATCH) for c in range(n)]
        return lambda: _each(requests, lambda r: stub.BatchCreateInteractions(r, metadata=auth))

    def copies(n: int) -> Callable[[], None]:
        work = [raw_rows(raw_project, c * BATCH) for c in range(n)]
        return lambda: _each(work, lambda rows: raw_copy(conn, rows, with_ids=True))

    def inserts(n: int) -> Callable[[], None]:
        work = [raw_params(raw_rows(raw_project, c * BATCH)) for c in range(n)]
        return lambda: _each(work, partial(_insert, conn))

    rates: dict[str, list[float]] = {"ours": [], "copy": [], "insert": []}
    paths = {"ours": ours, "copy": copies, "insert": inserts}
    for prepare in paths.values():
        prepare(2)()  # warm-up: connections, prepared statements
    for _ in range(rounds):
        for name, prepare in paths.items():
            rates[name].append(calls * BATCH / timed(prepare(calls)))
    title = f"BatchCreateInteractions, {BATCH} a call (~2 KB each), raw:"
    report(f"{title} binary COPY of each batch", "interactions/s", rates["ours"], rates["copy"])
    report(f"{title} INSERT ... unnest", "interactions/s", rates["ours"], rates["insert"])


def _each(items: list[Any], call: Callable[[Any], object]) -> None:
    for item in items:
        call(item)


def _insert(conn: Conn, params: dict[str, object]) -> None:
    with conn.transaction():
        conn.execute(RAW_INSERT, params)


def chunks(project_id: str, load_id: str, records: int, size: int) -> Iterator[Any]:
    """The load's messages, built as a client would (each record set from a template)."""
    template = rlhf_pb2.StreamCreateInteractionsRequest(project_id=project_id, load_id=load_id)
    for i in range(size):
        to_message(record(i), template.interactions.add())
    for offset, start in enumerate(range(0, records, size)):
        message = rlhf_pb2.StreamCreateInteractionsRequest()
        message.CopyFrom(template)
        message.offset = offset
        del message.interactions[min(size, records - start) :]
        for k, item in enumerate(message.interactions):
            r = record(start + k)
            item.prompt, item.response = r["prompt"], r["response"]
        yield message


def service_load(svc: Service, records: int, size: int, tag: str) -> None:
    stub = rlhf_pb2_grpc.RlhfServiceStub(_channel(svc))
    reply = stub.StreamCreateInteractions(
        chunks(svc.project_id, f"bench-{tag}", records, size),
        metadata=(("x-api-key", svc.api_key),),
    )
    assert reply.load.inserted == records, reply.load


def raw_load(conn: Conn, records: int) -> None:
    raw_copy(conn, (raw_row(i) for i in range(records)), with_ids=False)


def raw_row(i: int) -> tuple[object, ...]:
    r = record(i)
    return ("raw", r["prompt"], r["response"], r["feedback"], r["reward"], r["model"],
            r["session_id"], None, None, TAGS, None, Jsonb(METADATA), None)  # fmt: skip


def empty(conn: Conn) -> None:
    """Each load starts from an empty table and a fresh checkpoint, so neither pays the other's."""
    conn.execute("TRUNCATE interactions")
    conn.execute("CHECKPOINT")


def bench_stream(svc: Service, conn: Conn, records: int, rounds: int) -> None:
    """Leaves the service's last load in the table, for the export."""
    size = DEFAULT_CHUNKING.records
    ours, raw, cpu = [], [], []
    for n in range(rounds):
        empty(conn)
        raw.append(records / timed(partial(raw_load, conn, records)))
        empty(conn)
        before = server_cpu(svc.pid)
        ours.append(records / timed(partial(service_load, svc, records, size, str(n))))
        cpu.append((server_cpu(svc.pid) - before) / records)
    report(
        f"Streamed load of {records:,} interactions, {size} a chunk "
        "(service: StreamCreateInteractions; raw: one binary COPY)",
        "interactions/s",
        ours,
        raw,
    )
    print(f"  server CPU per interaction: {sorted(cpu)[len(cpu) // 2] * 1e6:.1f} µs")


def export_lines(svc: Service, format: str) -> int:
    stub = rlhf_pb2_grpc.RlhfServiceStub(_channel(svc))
    request = rlhf_pb2.ExportInteractionsRequest(project_id=svc.project_id, format=format)
    replies = stub.ExportInteractions(request, metadata=(("x-api-key", svc.api_key),))
    return sum(len(reply.lines) for reply in replies)


def raw_export_lines(conn: Conn, project_id: str, format: str) -> int:
    pairs = format in ("trl", "openai-preference")
    query = export_query(pairs)
    filters = dict.fromkeys(
        ("feedback", "model", "session_id", "agent_id", "tags", "reward_min", "reward_max",
         "start_time", "end_time")
    )  # fmt: skip
    lines = 0
    with conn.transaction(), conn.cursor(name="raw_export") as cur:
        cur.execute(query, {**filters, "project_id": project_id, "format": format})
        while batch := cur.fetchmany(500):
            lines += len(batch)
    return lines


def bench_export(svc: Service, conn: Conn, records: int) -> None:
    rss = Rss(svc.pid)
    for format in EXPORT_FORMATS:
        _reset_peak(svc.pid)
        rss.sample(f"{format} <")
        ours, lines = _timed_count(partial(export_lines, svc, format))
        rss.sample(f"{format} >")
        raw, raw_lines = _timed_count(partial(raw_export_lines, conn, svc.project_id, format))
        assert lines == raw_lines, (lines, raw_lines)
        print(
            f"Export of {records:,} interactions as {format}: {lines:,} lines; service "
            f"{records / ours:,.0f} interactions/s, raw cursor {records / raw:,.0f}, "
            f"ratio {raw / ours:.2f}"
        )
    rss.report()


def _timed_count(run: Callable[[], int]) -> tuple[float, int]:
    counted: list[int] = []
    return timed(lambda: counted.append(run())), counted[0]


def _reset_peak(pid: int) -> None:
    """Start the process's VmHWM afresh (Linux: 5 to clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")


Conn = psycopg.Connection[tuple[object, ...]]
_channels: dict[str, grpc.Channel] = {}


def _channel(svc: Service) -> grpc.Channel:
    """One channel per service for the whole run (as a long-lived client has)."""
    if svc.address not in _channels:
        options = [("grpc.max_receive_message_length", 64 << 20)]
        _channels[svc.address] = grpc.insecure_channel(svc.address, options=options)
    return _channels[svc.address]


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--calls", type=int, default=20, help="batch calls per round")
    args.add_argument("--rounds", type=int, default=3)
    args.add_argument("--records", type=int, default=100_000, help="interactions streamed")
    args.add_argument("--skip", choices=("batch", "stream"), action="append", default=[])
    opts = args.parse_args()
    with (
        backends() as (db_url, redis_url),
        service(db_url, redis_url) as svc,
        psycopg.connect(db_url, autocommit=True) as conn,
    ):
        if "batch" not in opts.skip:
            bench_batches(svc, conn, opts.calls, opts.rounds)
        if "stream" not in opts.skip:
            bench_stream(svc, conn, opts.records, opts.rounds)
            bench_export(svc, conn, opts.records)


if __name__ == "__main__":
    main()
