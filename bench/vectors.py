"""Vectors side by side in one run: load until searchable (recall@10 >= 0.95), queries/s, recall.

Three ways to the same clustered vectors (bench/vector_data.py) and the same queries:
  raw:    one binary COPY into the vectors table through psycopg, then CREATE INDEX USING hnsw
          (the partial per-namespace index our builder makes, m 16, ef_construction 64) in the
          foreground; queries are one plain SELECT ... ORDER BY <=> LIMIT 10 each.
  ours:   the storage path of StreamUpsertVectors: COPY chunks of 1000, one transaction each,
          while the background IndexBuilder runs as in the server (it waits for the load to
          go quiet, then builds CONCURRENTLY); searchable = the namespace's index is ready.
          Queries go through vector_search.search (namespace lookup, settings, merged query).
  chroma: chromadb's HTTP server (`chroma run`) and HttpClient, batches of its maximum size.
recall@10 is against exact results by numpy. Then another project gets a large namespace of its
own and our search is measured again on the first one, an ef_search sweep, and filtered
searches (bench/vector_filters.py).

    python -m bench.vectors                 # 50,000 x 384, 10,000 x 1536; 200,000 others
    python -m bench.vectors --full          # the issue's sizes: 200,000, 50,000; 1,000,000
    python -m bench.vectors --no-chroma     # without the peer (no '.[bench]' extra needed)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb

from bench.harness import backends
from bench.vector_chroma import ChromaSide, chroma_server
from bench.vector_data import Matrix, clustered, clustered_blocks, nearest, recall
from bench.vector_filters import compare_filters
from zerodb_batch.storage import vectors
from zerodb_batch.storage.migrate import migrate
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.vector_index import IndexBuilder, IndexPolicy
from zerodb_batch.storage.vector_search import Search, Tuning, search

K = 10
CHUNK = 1000
POLICY = IndexPolicy()  # the server's defaults
COLUMNS = "project_id, namespace, id, dim, embedding, metadata"
# The index our builder makes, built in the foreground.
RAW_INDEX = sql.SQL(
    "CREATE INDEX raw_hnsw ON vectors"
    " USING hnsw ((embedding::vector({})) vector_cosine_ops) WITH (m = {}, ef_construction = {})"
    " WHERE project_id = 'raw' AND namespace = 'ns'"
)


@dataclass
class Side:
    name: str
    load_seconds: float
    qps: float
    recall: float

    def row(self, n: int) -> str:
        return (
            f"  {self.name:<26} {n / self.load_seconds:>9,.0f} {self.load_seconds:>8.1f}"
            f" {self.qps:>8.0f} {self.recall:>8.3f}"
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

    def metadata(self, i: int) -> dict[str, int]:
        return {"b10": i % 10, "b100": i % 100, "b1000": i % 1000}


def measure(ds: DataSet, ask: Callable[[np.ndarray], list[str]]) -> tuple[float, float]:
    """(queries/s, recall@10) of one client asking the data set's queries in turn."""
    start = time.perf_counter()
    found = [ask(q) for q in ds.queries]
    return len(ds.queries) / (time.perf_counter() - start), recall(found, ds.truth)


# -- raw -----------------------------------------------------------------------------------------


def raw_copy(conn: psycopg.Connection[tuple[object, ...]], ds: DataSet, project: str) -> None:
    with (
        conn.transaction(),
        conn.cursor().copy(f"COPY vectors ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(["text", "text", "text", "int4", "vector", "jsonb"])
        for i, embedding in enumerate(ds.data):
            copy.write_row((project, "ns", f"v{i}", ds.dim, embedding, Jsonb(ds.metadata(i))))


def raw_side(url: str, ds: DataSet) -> Side:
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute(
            "SELECT set_config('maintenance_work_mem', %s, false)", (POLICY.maintenance_work_mem,)
        )
        start = time.perf_counter()
        raw_copy(conn, ds, "raw")
        conn.execute(
            RAW_INDEX.format(*map(sql.Literal, (ds.dim, POLICY.m, POLICY.ef_construction)))
        )
        loaded = time.perf_counter() - start
        conn.execute("ANALYZE vectors")
        conn.execute(f"SET hnsw.ef_search = {Tuning().ef_search:d}")
        query = sql.SQL(
            "SELECT id FROM vectors WHERE project_id = 'raw' AND namespace = 'ns'"
            " ORDER BY embedding::vector({dim}) <=> %s::vector({dim}) LIMIT {k}"
        ).format(dim=sql.Literal(ds.dim), k=sql.Literal(K))

        def ask(q: np.ndarray) -> list[str]:
            return [str(r[0]) for r in conn.execute(query, (q,)).fetchall()]

        qps, found = measure(ds, ask)
        conn.execute("DROP INDEX raw_hnsw")
        conn.execute("DELETE FROM vectors WHERE project_id = 'raw'")
        conn.execute("VACUUM vectors")
    return Side("raw COPY + CREATE INDEX", loaded, qps, found)


# -- ours ----------------------------------------------------------------------------------------


async def ours_load(
    url: str, project: str, namespace: str, ds: DataSet, chunk: int = CHUNK
) -> None:
    """The load: what StreamUpsertVectors' writer does per chunk (the lead replaces this with
    the RPC through a real server once it exists)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SET synchronous_commit = off")  # as the stream's chunk commits
        for start in range(0, len(ds.data), chunk):
            rows = vectors.VectorColumns()
            for i in range(start, min(start + chunk, len(ds.data))):
                rows.add(i, namespace, f"v{i}", ds.data[i], json.dumps(ds.metadata(i)))
            async with conn.transaction():
                await vectors.copy_insert(conn, project, rows)


async def until_indexed(conn: Conn, project: str, namespace: str) -> None:
    while True:
        cur = await conn.execute(
            "SELECT index_state FROM vector_namespaces WHERE project_id = %s AND namespace = %s",
            (project, namespace),
        )
        if (await cur.fetchone()) == ("ready",):
            return
        await asyncio.sleep(0.1)


async def ours_side(url: str, ds: DataSet, namespace: str) -> Side:
    # The server's policy; a namespace smaller than its threshold is indexed all the same here.
    builder = IndexBuilder(url, replace(POLICY, threshold=min(POLICY.threshold, len(ds.data))))
    task = asyncio.create_task(builder.run())
    try:
        start = time.perf_counter()
        await ours_load(url, "ours", namespace, ds)
        builder.wake()  # as the load engine does when a stream ends
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await until_indexed(conn, "ours", namespace)
            loaded = time.perf_counter() - start
            qps, found = await ours_measure(conn, ds, namespace)
    finally:
        task.cancel()
    return Side("ours COPY chunks + builder", loaded, qps, found)


async def ours_measure(
    conn: Conn, ds: DataSet, namespace: str, tuning: Tuning | None = None
) -> tuple[float, float]:
    start = time.perf_counter()
    found = [
        [m.id for m in await search(conn, "ours", Search(namespace, q, K), tuning or Tuning())]
        for q in ds.queries
    ]
    return len(ds.queries) / (time.perf_counter() - start), recall(found, ds.truth)


# -- the run -------------------------------------------------------------------------------------


def chroma_side(ds: DataSet) -> tuple[Side, float]:
    """The peer, and its server's resident memory (MiB) after the load."""
    with chroma_server() as (port, rss):
        side = ChromaSide(port, f"bench-{ds.dim}")
        start = time.perf_counter()
        side.load(ds.data)
        loaded = time.perf_counter() - start
        qps, found = measure(ds, lambda q: side.search(q, K))
        rss.sample("loaded")
    return Side("chromadb (HTTP server)", loaded, qps, found), rss.samples["loaded"][0] / 1024


def others(url: str, n: int, dim: int) -> float:
    """Another project's namespace of `n` vectors (raw COPY, not indexed); returns seconds."""
    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        for b, block in enumerate(clustered_blocks(n, dim, seed=99)):
            with (
                conn.transaction(),
                conn.cursor().copy(f"COPY vectors ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types(["text", "text", "text", "int4", "vector", "jsonb"])
                for i, e in enumerate(block):
                    copy.write_row(("others", "big", f"o{b}-{i}", dim, e, Jsonb({})))
        conn.execute(
            "INSERT INTO vector_namespaces (project_id, namespace, dim, vector_count)"
            " VALUES ('others', 'big', %s, %s)",
            (dim, n),
        )
        conn.execute("ANALYZE vectors")
    return time.perf_counter() - start


async def after_others(url: str, ds: DataSet, namespace: str) -> list[str]:
    lines = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        qps, found = await ours_measure(conn, ds, namespace)
        lines.append(f"  SearchVectors path, top_k 10:  {qps:6.0f} q/s   recall@10 {found:.3f}")
        for ef in (40, 64, 100, 200):
            qps, found = await ours_measure(conn, ds, namespace, Tuning(ef_search=ef))
            lines.append(
                f"  ef_search {ef:>3}:               {qps:6.0f} q/s   recall@10 {found:.3f}"
            )
    return lines


def run(opts: argparse.Namespace) -> None:
    sizes = [(opts.n384, 384), (opts.n1536, 1536)]
    with backends() as (url, _redis):
        asyncio.run(_migrate(url))
        print(f"PostgreSQL {url}; index policy {POLICY}")
        sets = [DataSet.make(n, dim) for n, dim in sizes]
        for ds in sets:
            n = len(ds.data)
            print(
                f"\n{n:,} clustered vectors of dim {ds.dim}, {len(ds.queries)} queries, top_k {K}"
            )
            print(f"  {'path':<26} {'vectors/s':>9} {'seconds':>8} {'q/s':>8} {'recall':>8}")
            raw = raw_side(url, ds)
            print(raw.row(n), flush=True)
            ours = asyncio.run(ours_side(url, ds, f"ns{ds.dim}"))
            print(ours.row(n), flush=True)
            if opts.chroma:
                peer, rss = chroma_side(ds)
                print(peer.row(n) + f"   (server RSS {rss:,.0f} MiB)")
                print(f"  ours/chroma: load {peer.load_seconds / ours.load_seconds:.2f}x,"
                      f" q/s {ours.qps / peer.qps:.2f}x")  # fmt: skip
            print(f"  ours/raw: load {raw.load_seconds / ours.load_seconds:.2f}x,"
                  f" q/s {ours.qps / raw.qps:.2f}x")  # fmt: skip
        ds = sets[0]
        seconds = others(url, opts.others, ds.dim)
        print(f"\nAnother project gets {opts.others:,} vectors of dim {ds.dim} ({seconds:.0f} s).")
        print("Our search on the first namespace meanwhile:")
        for line in asyncio.run(after_others(url, ds, f"ns{ds.dim}")):
            print(line)
        print("\nFiltered searches on that namespace (metadata equality), top_k 10:")
        for line in asyncio.run(compare_filters(url, "ours", f"ns{ds.dim}", ds.data, ds.queries)):
            print(line)


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
