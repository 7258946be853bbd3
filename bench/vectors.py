"""Vectors side by side in one run: load until searchable (recall@10 >= 0.95), queries/s, recall.

Three ways to the same clustered vectors (bench/vector_data.py) and the same queries:
  raw:    one binary COPY into the vectors table through psycopg, then CREATE INDEX USING hnsw
          (the partial per-namespace index our builder makes, m 16, ef_construction 64) in the
          foreground; a query is one plain SELECT ... ORDER BY <=> LIMIT 10.
  ours:   our server (`zerodb-batch serve`, its own process): StreamUpsertVectors in chunks of
          1000 built from the arrays by the client, while the server's background index builder
          waits for the load to go quiet, then builds CONCURRENTLY; searchable = ListNamespaces
          says the index is READY. Queries are SearchVectors calls over the channel.
  chroma: chromadb's HTTP server (`chroma run`) and HttpClient, batches of its maximum size.
Loads run one after the other; queries in rounds that alternate the paths (the machine is
shared, so medians of alternating rounds are the comparable figures). recall@10 is against
exact results by numpy. Then another project gets a large namespace and our search is measured
again on the first one, with an ef_search sweep, and filtered searches (bench/vector_filters.py).

    python -m bench.vectors                 # 50,000 x 384, 10,000 x 1536; 200,000 others
    python -m bench.vectors --full          # the issue's sizes: 200,000, 50,000; 1,000,000
    python -m bench.vectors --no-chroma     # without the peer (no '.[bench]' extra needed)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb

from bench.harness import Service, backends, service
from bench.vector_chroma import ChromaSide, chroma_server
from bench.vector_data import Matrix, clustered, clustered_blocks, nearest, recall
from bench.vector_filters import compare_filters
from zerodb.v1 import vector_pb2, vector_pb2_grpc
from zerodb_batch.storage.migrate import migrate
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.vector_index import IndexPolicy
from zerodb_batch.storage.vector_search import NamespaceCache, Search, Tuning, search

K = 10
CHUNK = 1000
ROUNDS = 3
POLICY = IndexPolicy()  # the server's defaults
COLUMNS = "project_id, namespace, id, dim, embedding, metadata"
TYPES = ["text", "text", "text", "int4", "vector", "jsonb"]
# The index our builder makes, built in the foreground.
RAW_INDEX = sql.SQL(
    "CREATE INDEX {} ON vectors"
    " USING hnsw ((embedding::vector({})) vector_cosine_ops) WITH (m = {}, ef_construction = {})"
    " WHERE project_id = 'raw' AND namespace = {}"
)
RAW_QUERY = sql.SQL(
    "SELECT id FROM vectors WHERE project_id = 'raw' AND namespace = {ns}"
    " ORDER BY embedding::vector({dim}) <=> %s::vector({dim}) LIMIT {k}"
)


@dataclass(frozen=True)
class DataSet:
    dim: int
    data: Matrix
    queries: Matrix
    truth: list[list[str]]

    @classmethod
    def make(cls, n: int, dim: int, queries: int = 200) -> DataSet:
        everything = clustered(n + queries, dim, seed=dim)  # queries from the same clusters
        data, asked = everything[:n], everything[n:]
        truth = [[f"v{i}" for i in row] for row in nearest(data, asked, K)]
        return cls(dim, data, asked, truth)

    @property
    def namespace(self) -> str:
        return f"ns{self.dim}"

    def metadata(self, i: int) -> dict[str, int]:
        return {"b10": i % 10, "b100": i % 100, "b1000": i % 1000}


def copy_rows(
    conn: psycopg.Connection[tuple[object, ...]], rows: Iterable[tuple[object, ...]]
) -> None:
    with (
        conn.transaction(),
        conn.cursor().copy(f"COPY vectors ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(TYPES)
        for row in rows:
            copy.write_row(row)


class RawPath:
    name = "raw COPY + CREATE INDEX"

    def __init__(self, url: str, ds: DataSet) -> None:
        self.ds = ds
        self.conn = psycopg.connect(url, autocommit=True)
        register_vector(self.conn)
        self.query = RAW_QUERY.format(ns=sql.Literal(ds.namespace), dim=ds.dim, k=K)

    def load(self) -> None:
        ds, maintenance = self.ds, POLICY.maintenance_work_mem
        self.conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (maintenance,))
        rows = (
            ("raw", ds.namespace, f"v{i}", ds.dim, e, Jsonb(ds.metadata(i)))
            for i, e in enumerate(ds.data)
        )
        copy_rows(self.conn, rows)
        index = sql.Identifier(f"raw_hnsw_{ds.dim}")
        settings = (ds.dim, POLICY.m, POLICY.ef_construction, ds.namespace)
        self.conn.execute(RAW_INDEX.format(index, *map(sql.Literal, settings)))
        self.conn.execute("ANALYZE vectors")
        self.conn.execute(f"SET hnsw.ef_search = {Tuning().ef_search:d}")

    def ask(self, q: np.ndarray) -> list[str]:
        return [str(r[0]) for r in self.conn.execute(self.query, (q,)).fetchall()]

    def close(self) -> None:
        self.conn.execute(
            sql.SQL("DROP INDEX {}").format(sql.Identifier(f"raw_hnsw_{self.ds.dim}"))
        )
        self.conn.execute("DELETE FROM vectors WHERE project_id = 'raw'")
        self.conn.close()


class OursPath:
    """Our server: StreamUpsertVectors and SearchVectors over a real channel. A connection of
    its own to the same database serves the ef_search sweep and the filter comparison, which
    tune what the RPC does not expose."""

    name = "ours StreamUpsertVectors"

    def __init__(self, svc: Service, ds: DataSet) -> None:
        self.svc, self.ds = svc, ds
        self.project = svc.project_id
        self.auth = (("x-api-key", svc.api_key),)
        options = [("grpc.max_receive_message_length", 64 << 20)]
        self.channel = grpc.insecure_channel(svc.address, options=options)
        self.stub = vector_pb2_grpc.VectorServiceStub(self.channel)
        self.runner = asyncio.Runner()
        url = svc.database_url
        self.conn: Conn = self.runner.run(psycopg.AsyncConnection.connect(url, autocommit=True))
        self.namespaces = NamespaceCache()

    def load(self) -> None:
        """Stream the vectors, then wait for the server's builder to make the index ready."""
        self.stub.StreamUpsertVectors(self._chunks(), metadata=self.auth)
        for _ in range(36_000):  # an hour at most
            if self._state() == vector_pb2.VECTOR_INDEX_STATE_READY:
                return
            time.sleep(0.1)

    def _chunks(self) -> Iterator[vector_pb2.StreamUpsertVectorsRequest]:
        ds = self.ds
        for offset, start in enumerate(range(0, len(ds.data), CHUNK)):
            items = []
            for i in range(start, min(start + CHUNK, len(ds.data))):
                item = vector_pb2.Vector(id=f"v{i}", vector_embedding=ds.data[i].tolist())
                item.metadata.update(ds.metadata(i))
                items.append(item)
            yield vector_pb2.StreamUpsertVectorsRequest(
                project_id=self.project, load_id=f"bench-{ds.namespace}", offset=offset,
                namespace=ds.namespace, vectors=items,
            )  # fmt: skip

    def _state(self) -> int:
        request = vector_pb2.ListNamespacesRequest(project_id=self.project)
        reply = self.stub.ListNamespaces(request, metadata=self.auth)
        return next(n.index_state for n in reply.namespaces if n.namespace == self.ds.namespace)

    def ask(self, q: np.ndarray) -> list[str]:
        request = vector_pb2.SearchVectorsRequest(
            project_id=self.project, namespace=self.ds.namespace, query_vector=q.tolist(), top_k=K
        )
        return [m.vector.id for m in self.stub.SearchVectors(request, metadata=self.auth).results]

    def ask_tuned(self, q: np.ndarray, tuning: Tuning) -> list[str]:
        spec = Search(self.ds.namespace, q, K)
        found = self.runner.run(search(self.conn, self.project, spec, tuning, self.namespaces))
        return [m.id for m in found]

    def close(self) -> None:
        self.channel.close()
        self.runner.run(self.conn.close())
        self.runner.close()


class ChromaPath:
    name = "chromadb (HTTP server)"

    def __init__(self, ds: DataSet) -> None:
        self.ds = ds
        self.stack = contextlib.ExitStack()
        port, self.rss = self.stack.enter_context(chroma_server())
        self.side = ChromaSide(port, f"bench-{ds.dim}")

    def load(self) -> None:
        self.side.load(self.ds.data)

    def ask(self, q: np.ndarray) -> list[str]:
        return self.side.search(q, K)

    def close(self) -> None:
        self.rss.sample("end")
        print(f"  chromadb server RSS after the load: {self.rss.samples['end'][0] / 1024:,.0f} MiB")
        self.stack.close()


def rate(ds: DataSet, ask: Callable[[np.ndarray], list[str]]) -> tuple[float, float]:
    """(queries/s, recall@10) of one client asking the data set's queries in turn."""
    start = time.perf_counter()
    found = [ask(q) for q in ds.queries]
    return len(ds.queries) / (time.perf_counter() - start), recall(found, ds.truth)


def race(svc: Service, ds: DataSet, chroma: bool) -> OursPath:
    """Load and query every path; print the table; returns ours, still loaded."""
    paths: list[RawPath | OursPath | ChromaPath] = [
        RawPath(svc.database_url, ds),
        OursPath(svc, ds),
    ]
    paths += [ChromaPath(ds)] if chroma else []
    n = len(ds.data)
    print(f"\n{n:,} clustered vectors of dim {ds.dim}, {len(ds.queries)} queries, top_k {K}")
    seconds = {}
    for path in paths:
        start = time.perf_counter()
        path.load()
        seconds[path.name] = time.perf_counter() - start
        print(f"  {path.name}: searchable after {seconds[path.name]:.1f} s", flush=True)
    qps: dict[str, list[float]] = {p.name: [] for p in paths}
    found: dict[str, float] = {}
    for _ in range(ROUNDS):
        for path in paths:
            q, found[path.name] = rate(ds, path.ask)
            qps[path.name].append(q)
    median = {name: statistics.median(rounds) for name, rounds in qps.items()}
    print(f"  {'path':<26} {'vectors/s':>9} {'seconds':>8} {'q/s':>8} {'recall':>7}  q/s rounds")
    for p in paths:
        rounds = ", ".join(f"{x:.0f}" for x in qps[p.name])
        loaded = f"{n / seconds[p.name]:>9,.0f} {seconds[p.name]:>8.1f}"
        print(f"  {p.name:<26} {loaded} {median[p.name]:>8.0f} {found[p.name]:>7.3f}  ({rounds})")
    mine = paths[1]
    for other in paths[:1] + paths[2:]:
        load = seconds[other.name] / seconds[mine.name]
        ratio = median[mine.name] / median[other.name]
        print(f"  ours / {other.name.split()[0]}: load rate {load:.2f}x, q/s {ratio:.2f}x")
        other.close()
    assert isinstance(mine, OursPath)
    return mine


def others(url: str, n: int, dim: int) -> float:
    """Another project's namespace of `n` vectors (raw COPY, not indexed); returns seconds."""
    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        for b, block in enumerate(clustered_blocks(n, dim, seed=99)):
            rows = (("others", "big", f"o{b}-{i}", dim, e, Jsonb({})) for i, e in enumerate(block))
            copy_rows(conn, rows)
        conn.execute(
            "INSERT INTO vector_namespaces (project_id, namespace, dim, vector_count)"
            " VALUES ('others', 'big', %s, %s)",
            (dim, n),
        )
        conn.execute("ANALYZE vectors")
    return time.perf_counter() - start


def run(opts: argparse.Namespace) -> None:
    with backends() as (url, redis_url):
        asyncio.run(_migrate(url))
        print(f"PostgreSQL {url}\nindex policy {POLICY}")
        sets = [DataSet.make(opts.n384, 384), DataSet.make(opts.n1536, 1536)]
        with service(url, redis_url) as svc:
            run_with(opts, svc, url, sets)


def run_with(opts: argparse.Namespace, svc: Service, url: str, sets: list[DataSet]) -> None:
    ours = [race(svc, ds, opts.chroma) for ds in sets]
    ds, first = sets[0], ours[0]
    seconds = others(url, opts.others, ds.dim)
    print(f"\nAnother project gets {opts.others:,} vectors of dim {ds.dim} ({seconds:.0f} s).")
    print(f"Our search on the {len(ds.data):,} x {ds.dim} namespace meanwhile:")
    for ef in (40, 64, 100, 200):
        tuning = Tuning(ef_search=ef)
        q, r = rate(ds, lambda v, t=tuning: first.ask_tuned(v, t))  # type: ignore[misc]
        print(f"  ef_search {ef:>3}: {q:6.0f} q/s   recall@10 {r:.3f}")
    print("\nFiltered searches there (metadata equality), top_k 10:")
    filtered = compare_filters(first.conn, first.project, ds.namespace, ds.data, ds.queries)
    print("\n".join(first.runner.run(filtered)))
    for path in ours:
        path.close()


async def _migrate(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)


def main() -> None:
    args = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    args.add_argument("--n384", type=int, default=50_000)
    args.add_argument("--n1536", type=int, default=10_000)
    args.add_argument("--others", type=int, default=200_000)
    args.add_argument("--full", action="store_true", help="200,000 / 50,000 / 1,000,000")
    args.add_argument("--no-chroma", dest="chroma", action="store_false")
    opts = args.parse_args()
    if opts.full:
        opts.n384, opts.n1536, opts.others = 200_000, 50_000, 1_000_000
    run(opts)


if __name__ == "__main__":
    main()
