"""Clustered synthetic embeddings and exact nearest neighbours by numpy, for benches and tests.

Uniform noise is the easy case for nothing and the hard case for HNSW (no neighbourhoods); real
embeddings sit in clusters. Points here are Gaussian blobs around random centres, normalised.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]


def clustered(n: int, dim: int, *, seed: int = 0, clusters: int = 0, spread: float = 0.6) -> Matrix:
    """`n` unit vectors of `dim` dimensions around `clusters` centres (default about sqrt(n)).
    The same seed and sizes give the same data."""
    return np.concatenate(
        list(clustered_blocks(n, dim, seed=seed, clusters=clusters, spread=spread))
    )


def clustered_blocks(
    n: int, dim: int, *, seed: int = 0, clusters: int = 0, spread: float = 0.6, block: int = 50_000
) -> Iterator[Matrix]:
    """clustered() in blocks of `block` rows, for sizes that should not sit in memory at once."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters or max(1, int(n**0.5)), dim)).astype(np.float32)
    for start in range(0, n, block):
        size = min(block, n - start)
        points = centres[rng.integers(0, len(centres), size)]
        points += spread * rng.standard_normal((size, dim)).astype(np.float32)
        yield points / np.linalg.norm(points, axis=1, keepdims=True)


def nearest(data: Matrix, queries: Matrix, k: int, metric: str = "cosine") -> npt.NDArray[np.intp]:
    """Row numbers of the exact `k` nearest rows of `data` for each query, nearest first."""
    if metric == "l2":
        scores = -((queries**2).sum(1)[:, None] - 2 * queries @ data.T + (data**2).sum(1)[None, :])
    elif metric == "cosine":
        unit = data / np.linalg.norm(data, axis=1, keepdims=True)
        scores = queries / np.linalg.norm(queries, axis=1, keepdims=True) @ unit.T
    else:  # inner product
        scores = queries @ data.T
    top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def recall(found: Sequence[Sequence[object]], truth: Sequence[Sequence[object]]) -> float:
    """Mean share of each query's true neighbours that were found."""
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / sum(len(t) for t in truth)
