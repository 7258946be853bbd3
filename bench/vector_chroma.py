"""chromadb as the peer of bench/vectors.py: its HTTP server (`chroma run`) and HttpClient, the way
a service would use it, with its own maximum batch size and its default HNSW settings."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench.harness import Rss, free_port
from bench.vector_data import Matrix


@contextlib.contextmanager
def chroma_server() -> Iterator[tuple[int, Rss]]:
    """`chroma run` on loopback in a temp dir: (port, its resident memory sampler)."""
    try:
        import chromadb  # noqa: F401 - the bench extra: pip install -e '.[bench]'
    except ImportError as e:
        raise SystemExit("chromadb is not installed: pip install -e '.[bench]'") from e
    chroma = Path(sys.executable).with_name("chroma")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="zdb-bench-chroma-") as tmp:
        proc = subprocess.Popen(
            [str(chroma), "run", "--path", tmp, "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_ready(port)
            yield port, Rss(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)


def _wait_ready(port: int) -> None:
    import chromadb

    for _ in range(300):
        with contextlib.suppress(Exception):
            chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
            return
        time.sleep(0.1)
    raise RuntimeError("chroma run did not answer within 30 s")


class ChromaSide:
    """One collection (cosine) on the server: load, query."""

    def __init__(self, port: int, name: str) -> None:
        import chromadb

        self.client = chromadb.HttpClient(host="127.0.0.1", port=port)
        self.collection = self.client.create_collection(
            name, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
        )

    def load(self, data: Matrix) -> None:
        # Its maximum batch size (5461 here), as long as the request stays within what its HTTP
        # server takes: 5461 x 1536 numbers in JSON are refused as too large.
        batch = min(self.client.get_max_batch_size(), 2_000_000 // data.shape[1])
        for start in range(0, len(data), batch):
            part = data[start : start + batch]
            ids = [f"v{start + n}" for n in range(len(part))]
            self.collection.add(ids=ids, embeddings=part)

    def search(self, query: np.ndarray, k: int) -> list[str]:
        found = self.collection.query(query_embeddings=[query], n_results=k, include=[])
        return list(found["ids"][0])
