"""SearchVectors through a real server and channel: the true nearest neighbours (checked against
numpy), metrics, thresholds, metadata filters in the table filter language, and, on a server with
a low index threshold, a namespace that gets its HNSW index in the background while searches stay
correct, with recall measured."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2

from bench.vector_data import clustered, nearest, recall
from tests.api.test_vector_batch import refused, upsert, vec, violations
from tests.plugins.checks import wait_for
from tests.plugins.server import Project, ServerThread, server_settings
from tests.plugins.services import Backends
from zerodb.v1 import vector_pb2
from zerodb.v1.vector_pb2_grpc import VectorServiceStub


@pytest.fixture
def vectors(channel: grpc.Channel) -> VectorServiceStub:
    return VectorServiceStub(channel)


def search(
    stub: VectorServiceStub, project: Project, query: Any, namespace: str = "docs", **kw: Any
) -> list[vector_pb2.VectorMatch]:
    request = vector_pb2.SearchVectorsRequest(
        project_id=project.id, query_vector=list(map(float, query)), namespace=namespace, **kw
    )
    return list(stub.SearchVectors(request, metadata=project.auth).results)


def load(
    stub: VectorServiceStub, project: Project, data: np.ndarray, namespace: str = "docs"
) -> None:
    items = []
    for i, row in enumerate(data):
        item = vec(f"v{i}", row.tolist(), namespace, document=f"doc {i}")
        item.metadata.update({"n": i, "parity": "even" if i % 2 == 0 else "odd"})
        items.append(item)
    upsert(stub, project, items)


@pytest.mark.parametrize(
    ("metric", "name"),
    [
        (vector_pb2.VECTOR_METRIC_UNSPECIFIED, "cosine"),
        (vector_pb2.VECTOR_METRIC_L2, "l2"),
        (vector_pb2.VECTOR_METRIC_INNER_PRODUCT, "ip"),
    ],
)
def test_the_true_nearest_neighbours(
    vectors: VectorServiceStub, project: Project, metric: int, name: str
) -> None:
    data = clustered(300, 16, seed=3) * np.linspace(0.5, 2.0, 300, dtype=np.float32)[:, None]
    load(vectors, project, data)
    queries = clustered(10, 16, seed=4)
    truth = nearest(data, queries, 10, name)
    for query, expected in zip(queries, truth, strict=True):
        found = search(vectors, project, query, top_k=10, metric=metric)
        assert [m.vector.id for m in found] == [f"v{i}" for i in expected]
        similarities = [m.similarity for m in found]
        assert similarities == sorted(similarities, reverse=True)


def test_scores_threshold_embeddings_and_result_fields(
    vectors: VectorServiceStub, project: Project
) -> None:
    load(vectors, project, np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], np.float32))
    found = search(vectors, project, [1.0, 0.0], limit=3)
    assert [m.vector.id for m in found] == ["v0", "v1", "v2"]
    assert [round(m.similarity, 5) for m in found] == [1.0, 0.8, 0.0]
    assert [round(m.distance, 5) for m in found] == [0.0, 0.2, 1.0]
    top = found[0].vector
    assert (top.namespace, top.document, dict(top.metadata)["parity"]) == ("docs", "doc 0", "even")
    assert list(top.vector_embedding) == []  # not asked for
    assert [m.vector.id for m in search(vectors, project, [1.0, 0.0], threshold=0.5)] == [
        "v0",
        "v1",
    ]
    (first,) = search(vectors, project, [1.0, 0.0], top_k=1, include_embeddings=True)
    assert list(first.vector.vector_embedding) == [1.0, 0.0]
    assert search(vectors, project, [1.0, 0.0], namespace="nothing-here") == []


def test_metadata_filters(vectors: VectorServiceStub, project: Project) -> None:
    data = clustered(200, 8, seed=5)
    load(vectors, project, data)
    query = data[0]

    def ids(filters: dict[str, Any], **kw: Any) -> list[str]:
        condition = struct_pb2.Struct()
        condition.update(filters)
        return [
            m.vector.id for m in search(vectors, project, query, metadata_filter=condition, **kw)
        ]

    even = ids({"parity": "even"}, top_k=100)
    assert len(even) == 100 and all(int(i[1:]) % 2 == 0 for i in even)
    assert ids({"n": {"$in": [3, 5, 7]}}) == [
        f"v{i}" for i in nearest(data[[3, 5, 7]], query[None, :], 3)[0].choose([3, 5, 7])
    ]
    assert ids({"$or": [{"n": {"$lt": 2}}, {"parity": {"$exists": False}}]}, top_k=5) in (
        ["v0", "v1"], ["v1", "v0"],
    )  # fmt: skip
    err = refused(lambda: ids({"n": {"$near": 1}}))
    assert violations(err) == [("metadata_filter.n.$near", "UNKNOWN_OPERATOR")]


def test_search_request_checks(vectors: VectorServiceStub, project: Project) -> None:
    load(vectors, project, np.array([[1.0, 0.0, 0.0]], np.float32))
    err = refused(lambda: search(vectors, project, [1.0, 0.0]))
    assert violations(err) == [("query_vector", "DIMENSION_MISMATCH")]
    err = refused(lambda: search(vectors, project, [float("nan"), 0.0, 0.0], top_k=1001))
    assert violations(err) == [("query_vector", "NOT_FINITE"), ("top_k", "OUT_OF_RANGE")]
    err = refused(lambda: search(vectors, project, [1.0, 0.0, 0.0], limit=101))
    assert violations(err) == [("limit", "OUT_OF_RANGE")]
    err = refused(lambda: search(vectors, project, [], threshold=float("inf")))
    assert violations(err) == [("query_vector", "REQUIRED"), ("threshold", "NOT_FINITE")]
    err = refused(lambda: search(vectors, project, [1.0, 0.0, 0.0], metric=17))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def indexing_server(vector_database: str, backends: Backends) -> Iterator[ServerThread]:
    """A server of its own database whose namespaces get an index from 1,000 vectors on."""
    settings = server_settings(
        vector_database,
        backends.redis_url,
        vector_index_threshold=1000,
        vector_index_poll_seconds=0.2,
    )
    running = ServerThread(settings)
    yield running
    running.close()


def test_a_large_namespace_is_indexed_in_the_background_and_searched_with_recall(
    indexing_server: ServerThread,
) -> None:
    project = Project(*indexing_server.new_key())
    data = clustered(3000, 32, seed=7)
    queries = clustered(40, 32, seed=8)
    truth = [[f"v{i}" for i in row] for row in nearest(data, queries, 10)]
    with grpc.insecure_channel(indexing_server.address) as channel:
        stub = VectorServiceStub(channel)
        load(stub, project, data)

        def state() -> int:
            request = vector_pb2.ListNamespacesRequest(project_id=project.id)
            (ns,) = stub.ListNamespaces(request, metadata=project.auth).namespaces
            return ns.index_state

        # Whatever the index's state meanwhile, every search is right: exact until it serves.
        while (before := state()) != vector_pb2.VECTOR_INDEX_STATE_READY:
            found = [m.vector.id for m in search(stub, project, queries[0], top_k=10)]
            if state() != vector_pb2.VECTOR_INDEX_STATE_READY:
                assert found == truth[0]
            wait_for(lambda: state() != before or None, "the index state to move", timeout=60)
        found = [[m.vector.id for m in search(stub, project, q, top_k=10)] for q in queries]
        assert recall(found, truth) >= 0.9
