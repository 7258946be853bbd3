"""Tables: BatchQuery and StreamInsertRows through our service vs the same work through psycopg.

One table of `--rows` rows (1,000,000 by default), each `{"k": "v<i // 10>", "u": <same>, "n": i,
"payload": ...}`: every value of `k` and `u` is held by 10 rows; `k` is an indexed field, `u` is
not. The rows go in by a raw COPY, then ANALYZE.

1. A 50-operation BatchQuery of indexed equality queries (`{"k": ...}`, limit 10, 10 rows each),
   sequential and parallel, vs the same 50 SELECT statements (table_rows.query_statement) sent
   one after another through psycopg on one connection. Each round draws new keys; both sides
   get the same ones. batches/s, medians.
2. One filtered query over the table on the indexed `k` and on the unindexed `u` (10 rows each),
   as a one-operation BatchQuery: ms per query, and rows of the table examined per second.
3. StreamInsertRows of `--load-rows` rows (1,000,000 by default; chunks of 1000, the loader's
   default) into a new table vs one raw text COPY of the same rows into another, each from an
   empty table after a CHECKPOINT. The stream's figure includes its closing ANALYZE.

    python -m bench.tables [--rows 1000000] [--load-rows 1000000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import grpc
import psycopg
from google.protobuf import json_format
from psycopg import sql

from bench.harness import Service, backends, report, service, timed
from zerodb.v1 import table_pb2, table_pb2_grpc
from zerodb_batch.domain.table_filter import parse_filter
from zerodb_batch.domain.table_ops import RowQuery
from zerodb_batch.loader import DEFAULT_CHUNKING
from zerodb_batch.storage import table_rows
from zerodb_batch.storage.table_rows import new_row_id
from zerodb_batch.storage.tables import TableInfo

Conn = psycopg.Connection[tuple[object, ...]]
OPERATIONS = 50
PAYLOAD = "x" * 60


def row(i: int) -> str:
    key = f"v{i // 10}"
    return json.dumps({"k": key, "u": key, "n": i, "payload": PAYLOAD}, separators=(",", ":"))


def raw_copy(
    conn: Conn, project_id: str, table_id: int, count: int, text: Callable[[int], str]
) -> None:
    """Rows text(0) .. text(count - 1) by one text COPY in one transaction."""
    prefix = f"{project_id}\t{table_id}\t"
    with (
        conn.transaction(),
        conn.cursor().copy(
            "COPY table_rows (project_id, table_id, row_id, row_data) FROM STDIN"
        ) as copy,
    ):
        for start in range(0, count, 10_000):
            lines = [
                f"{prefix}{new_row_id()}\t{text(i)}\n"
                for i in range(start, min(start + 10_000, count))
            ]
            copy.write("".join(lines))


class Bench:
    """The service, a stub on one channel, and a raw connection to the same database."""

    def __init__(self, svc: Service, conn: Conn, channel: grpc.Channel) -> None:
        self.svc, self.conn = svc, conn
        self.stub = table_pb2_grpc.TableServiceStub(channel)
        self.auth = (("x-api-key", svc.api_key),)

    def create(self, name: str, *indexed: str) -> TableInfo:
        request = table_pb2.CreateTableRequest(
            project_id=self.svc.project_id, name=name, indexed_fields=indexed
        )
        self.stub.CreateTable(request, metadata=self.auth)
        found = self.conn.execute(
            "SELECT table_id FROM tables WHERE project_id = %s AND name = %s",
            (self.svc.project_id, name),
        ).fetchone()
        assert found is not None
        return TableInfo(self.svc.project_id, int(found[0]), name, "", indexed, None)  # type: ignore[arg-type, call-overload]

    def batch(self, body: dict[str, Any]) -> table_pb2.BatchQueryResponse:
        request = json_format.ParseDict(body, table_pb2.BatchQueryRequest())
        request.project_id = self.svc.project_id
        reply = self.stub.BatchQuery(request, metadata=self.auth)
        assert reply.succeeded == len(request.operations), reply.results[0].error
        return reply

    def empty(self) -> None:
        self.conn.execute("CHECKPOINT")


def batch_queries(bench: Bench, table: TableInfo, rows: int, rounds: int) -> None:
    keys = [[f"v{random.randrange(rows // 10)}" for _ in range(OPERATIONS)] for _ in range(rounds)]
    seq, par, raw = [], [], []
    for chosen in keys:
        ops = [{"table": table.name, "filters": {"k": k}, "limit": 10} for k in chosen]
        seq.append(1 / timed(lambda: bench.batch({"operations": ops})))  # noqa: B023
        par.append(1 / timed(lambda: bench.batch({"operations": ops, "parallel": True})))  # noqa: B023
        statements = [
            table_rows.query_statement(table, RowQuery(parse_filter({"k": k}, "f"), limit=10))
            for k in chosen
        ]
        raw.append(1 / timed(partial(_run_raw, bench.conn, statements)))
    title = f"BatchQuery of {OPERATIONS} indexed equality queries (10 rows each), {rows:,} rows"
    report(f"{title}, sequential (raw: the same statements via psycopg)", "batches/s", seq, raw)
    report(f"{title}, parallel (raw: the same statements via psycopg)", "batches/s", par, raw)
    print(f"  parallel/sequential: {statistics.median(par) / statistics.median(seq):.2f}")


def heavy_batches(bench: Bench, table: TableInfo, rows: int, rounds: int) -> None:
    """Where PostgreSQL's work dominates: 8 unindexed equality queries (full scans) a batch."""
    seq, par = [], []
    for _ in range(rounds):
        ops = [{"table": table.name, "filters": {"u": f"v{random.randrange(rows // 10)}"}}
               for _ in range(8)]  # fmt: skip
        seq.append(1 / timed(lambda: bench.batch({"operations": ops})))  # noqa: B023
        par.append(1 / timed(lambda: bench.batch({"operations": ops, "parallel": True})))  # noqa: B023
    print(f"BatchQuery of 8 unindexed equality queries over {rows:,} rows (full scans)")
    print(f"  sequential: {statistics.median(seq):8.2f} batches/s")
    print(f"  parallel:   {statistics.median(par):8.2f} batches/s")
    print(f"  parallel/sequential: {statistics.median(par) / statistics.median(seq):.2f}")


def _run_raw(conn: Conn, statements: list[Any]) -> None:
    for stmt, params in statements:
        found = conn.execute(stmt, params, prepare=False).fetchall()
        assert len(found) == 10


def filtered_query(bench: Bench, table: TableInfo, rows: int) -> None:
    print(f"One filtered query over {rows:,} rows (10 rows match), as a one-operation BatchQuery")
    for field, repeats in (("k", 50), ("u", 5)):
        print(f"  plan on {field}: {plan(bench.conn, table, field)}")
        times = []
        for _ in range(repeats):
            op = {"table": table.name, "filters": {field: f"v{random.randrange(rows // 10)}"}}
            times.append(timed(lambda op=op: bench.batch({"operations": [op]})))
        ms = statistics.median(times) * 1000
        what = "indexed  " if field == "k" else "unindexed"
        print(
            f"  {what}: {ms:9.2f} ms   {rows / (ms / 1000):14,.0f} table rows/s (table size / time)"
        )


def plan(conn: Conn, table: TableInfo, field: str) -> str:
    """The scan the planner picks for an equality query on `field`, as the service runs it."""
    stmt, params = table_rows.query_statement(table, RowQuery(parse_filter({field: "v1"}, "f")))
    lines = [str(r[0]) for r in conn.execute(sql.SQL("EXPLAIN ") + stmt, params).fetchall()]
    return next((line.strip() for line in lines if "Scan" in line), lines[0]).split("  (")[0]


def stream_chunks(project_id: str, table: str, count: int) -> Iterator[bytes]:
    """The load's messages, serialized once and given their offsets by merging (protobuf reads
    concatenated messages as one): the client costs next to nothing."""
    size = DEFAULT_CHUNKING.records
    base = table_pb2.StreamInsertRowsRequest(project_id=project_id, load_id=f"bench-{table}",
                                             table=table)  # fmt: skip
    for i in range(size):
        base.rows.add().update(json.loads(row(i)))
    whole = base.SerializeToString()
    for offset, start in enumerate(range(0, count, size)):
        n = min(size, count - start)
        body = whole if n == size else _first(base, n)
        yield body + table_pb2.StreamInsertRowsRequest(offset=offset).SerializeToString()


def _first(base: table_pb2.StreamInsertRowsRequest, n: int) -> bytes:
    part = table_pb2.StreamInsertRowsRequest()
    part.CopyFrom(base)
    del part.rows[n:]
    return part.SerializeToString()


def stream_load(bench: Bench, count: int, rounds: int) -> None:
    ours, raw = [], []
    texts = [row(i) for i in range(DEFAULT_CHUNKING.records)]
    for n in range(rounds):
        streamed = bench.create(f"streamed{n}")
        bench.empty()
        ours.append(count / timed(partial(_stream, bench, streamed.name, count)))
        copied = bench.create(f"copied{n}")
        bench.empty()
        copy = partial(raw_copy, bench.conn, bench.svc.project_id, copied.table_id, count)
        raw.append(count / timed(lambda: copy(lambda i: texts[i % len(texts)])))  # noqa: B023
    report(
        f"StreamInsertRows of {count:,} rows, {DEFAULT_CHUNKING.records} a chunk, with its "
        "closing ANALYZE (raw: one text COPY of the same rows)",
        "rows/s",
        ours,
        raw,
    )


def _stream(bench: Bench, table: str, count: int) -> None:
    with grpc.insecure_channel(bench.svc.address) as channel:
        send: Callable[..., table_pb2.StreamInsertRowsResponse] = channel.stream_unary(
            "/zerodb.v1.TableService/StreamInsertRows",
            request_serializer=lambda b: b,
            response_deserializer=table_pb2.StreamInsertRowsResponse.FromString,
        )
        reply = send(stream_chunks(bench.svc.project_id, table, count), metadata=bench.auth)
    assert reply.load.inserted == count, reply.load


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--rows", type=int, default=1_000_000)
    args.add_argument("--load-rows", type=int, default=1_000_000)
    args.add_argument("--rounds", type=int, default=15, help="of the 50-operation batch")
    args.add_argument("--load-rounds", type=int, default=1)
    opts = args.parse_args()
    with (
        backends() as (db_url, redis_url),
        service(db_url, redis_url) as svc,
        psycopg.connect(db_url, autocommit=True) as conn,
        grpc.insecure_channel(svc.address) as channel,
    ):
        bench = Bench(svc, conn, channel)
        table = bench.create("q", "k")
        raw_copy(conn, svc.project_id, table.table_id, opts.rows, row)
        conn.execute("ANALYZE table_rows")
        batch_queries(bench, table, opts.rows, opts.rounds)
        filtered_query(bench, table, opts.rows)
        heavy_batches(bench, table, opts.rows, 3)
        stream_load(bench, opts.load_rows, opts.load_rounds)


if __name__ == "__main__":
    main()
