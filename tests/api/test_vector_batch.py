"""BatchUpsertVectors, BatchGetVectors, BatchDeleteVectors and ListNamespaces through a real
server and channel: dimensions per namespace, the checks of an embedding, aliases, batch
semantics, isolation between projects."""

from __future__ import annotations

import math
from typing import Any

import grpc
import numpy as np
import psycopg
import pytest

from tests.plugins.checks import details
from tests.plugins.server import Project, ServerThread
from zerodb.v1 import common_pb2, vector_pb2
from zerodb.v1.vector_pb2_grpc import VectorServiceStub

Db = psycopg.Connection[tuple[object, ...]]
MIB = 1 << 20


@pytest.fixture
def vectors(channel: grpc.Channel) -> VectorServiceStub:
    return VectorServiceStub(channel)


def vec(vid: str, values: list[float], namespace: str = "", **kw: Any) -> vector_pb2.Vector:
    return vector_pb2.Vector(id=vid, vector_embedding=values, namespace=namespace, **kw)


def upsert(
    stub: VectorServiceStub, project: Project, items: list[vector_pb2.Vector], **kw: Any
) -> vector_pb2.BatchUpsertVectorsResponse:
    request = vector_pb2.BatchUpsertVectorsRequest(project_id=project.id, vectors=items, **kw)
    return stub.BatchUpsertVectors(request, metadata=project.auth)


def get(
    stub: VectorServiceStub, project: Project, ids: list[str], namespace: str = ""
) -> vector_pb2.BatchGetVectorsResponse:
    request = vector_pb2.BatchGetVectorsRequest(project_id=project.id, ids=ids, namespace=namespace)
    return stub.BatchGetVectors(request, metadata=project.auth)


def namespaces(stub: VectorServiceStub, project: Project, **kw: Any) -> list[tuple[str, int, int]]:
    request = vector_pb2.ListNamespacesRequest(project_id=project.id, **kw)
    reply = stub.ListNamespaces(request, metadata=project.auth)
    return [(n.namespace, n.vector_count, n.dimension) for n in reply.namespaces]


def refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    return [(v.field, v.reason) for v in details(err)[1].field_violations]


def stored(db: Db, project: Project) -> int:
    row = db.execute("SELECT count(*) FROM vectors WHERE project_id = %s", (project.id,)).fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


def test_seed_body_upserts_reads_back_and_replaces(
    vectors: VectorServiceStub, project: Project
) -> None:
    item = vec("vec-001", [0.021, -0.043, 0.118], "documents")
    item.metadata.update({"source": "upload", "doc_id": "doc-42"})
    reply = upsert(vectors, project, [item])
    assert (reply.inserted, reply.updated, list(reply.ids)) == (1, 0, ["vec-001"])
    assert reply.results[0].outcome == common_pb2.OUTCOME_INSERTED

    (got,) = get(vectors, project, ["vec-001"], "documents").vectors
    assert np.allclose(got.vector_embedding, [0.021, -0.043, 0.118])
    assert (got.namespace, dict(got.metadata)) == (
        "documents",
        {"source": "upload", "doc_id": "doc-42"},
    )

    again = vec("vec-001", [1.0, 2.0, 3.0], "documents", document="the text")
    again.metadata.update({"source": "edit"})
    reply = upsert(vectors, project, [again])
    assert (reply.inserted, reply.updated) == (0, 1)
    (got,) = get(vectors, project, ["vec-001"], "documents").vectors
    assert (list(got.vector_embedding), dict(got.metadata), got.document) == (
        [1.0, 2.0, 3.0], {"source": "edit"}, "the text",
    )  # fmt: skip
    assert namespaces(vectors, project) == [("documents", 1, 3)]


def test_namespace_defaults_and_generated_ids(vectors: VectorServiceStub, project: Project) -> None:
    reply = upsert(vectors, project, [vec("", [1.0, 0.0]), vec("", [0.0, 1.0], "other")])
    assert all(len(i) == 36 for i in reply.ids)  # UUIDs
    assert len(get(vectors, project, [reply.ids[0]]).vectors) == 1  # in `default`
    request_default = upsert(vectors, project, [vec("x", [1.0, 1.0])], namespace="mine")
    assert request_default.inserted == 1
    assert [n[0] for n in namespaces(vectors, project)] == ["default", "mine", "other"]


def test_the_live_api_spellings_are_accepted_and_conflicts_refused(
    vectors: VectorServiceStub, project: Project
) -> None:
    item = vector_pb2.Vector(vector_id="live-1", vector_embedding=[0.5, 0.5])
    item.vector_metadata.update({"k": 1})
    assert list(upsert(vectors, project, [item]).ids) == ["live-1"]
    (got,) = get(vectors, project, ["live-1"]).vectors
    assert (got.id, got.vector_id, dict(got.metadata)) == ("live-1", "", {"k": 1})

    both = vector_pb2.Vector(id="a", vector_id="b", vector_embedding=[0.5, 0.5])
    both.metadata.update({"k": 1})
    both.vector_metadata.update({"k": 2})
    err = refused(lambda: upsert(vectors, project, [both]))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violations(err) == [
        ("vectors[0].vector_id", "ALIAS_CONFLICT"),
        ("vectors[0].vector_metadata", "ALIAS_CONFLICT"),
    ]


def test_a_namespace_keeps_the_dimension_of_its_first_vector(
    vectors: VectorServiceStub, project: Project, db: Db
) -> None:
    upsert(vectors, project, [vec("a", [1.0, 2.0, 3.0], "three")])
    err = refused(
        lambda: upsert(
            vectors, project, [vec("b", [1.0, 2.0, 3.0], "three"), vec("c", [1.0, 2.0], "three")]
        )
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    info, _ = details(err)
    assert info.reason == "DIMENSION_MISMATCH"
    assert (info.metadata["expected"], info.metadata["actual"]) == ("3", "2")
    assert violations(err) == [("vectors[1].vector_embedding", "DIMENSION_MISMATCH")]
    assert stored(db, project) == 1  # atomic: b was not written

    reply = upsert(
        vectors,
        project,
        [vec("b", [1.0, 2.0, 3.0], "three"), vec("c", [1.0, 2.0], "three"), vec("d", [1.0], "one")],
        partial_success=True,
    )
    assert (reply.inserted, reply.failed) == (2, 1)
    assert list(reply.ids) == ["b", "", "d"]
    bad = reply.results[1]
    assert (bad.outcome, bad.id, bad.error.code) == (common_pb2.OUTCOME_FAILED, "c", 3)
    # The first vector of a batch fixes a new namespace's dimension for the rest of it (the first
    # sent, though the batch is written in id order).
    err = refused(
        lambda: upsert(
            vectors,
            project,
            [vec("g", [1.0], "new"), vec("f", [1.0, 2.0], "new"), vec("e", [1.0, 2.0], "new")],
        )
    )
    assert violations(err) == [
        ("vectors[1].vector_embedding", "DIMENSION_MISMATCH"),
        ("vectors[2].vector_embedding", "DIMENSION_MISMATCH"),
    ]


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([], "REQUIRED"),
        ([1.0, math.nan], "NOT_FINITE"),
        ([math.inf, 1.0], "NOT_FINITE"),
        ([-math.inf], "NOT_FINITE"),
        ([0.0, 0.0, 0.0], "ZERO_VECTOR"),
        ([0.5] * 4001, "TOO_MANY_DIMENSIONS"),
    ],
    ids=["empty", "nan", "inf", "-inf", "zeros", "4001"],
)
def test_bad_embeddings_are_refused_with_their_path(
    vectors: VectorServiceStub, project: Project, db: Db, values: list[float], reason: str
) -> None:
    items = [vec("ok", [1.0, 2.0, 3.0], "ns"), vec("bad", values, "ns")]
    err = refused(lambda: upsert(vectors, project, items))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violations(err) == [("vectors[1].vector_embedding", reason)]
    assert stored(db, project) == 0


def test_other_field_checks(vectors: VectorServiceStub, project: Project) -> None:
    items = [
        vec("x" * 129, [1.0]),
        vec("a", [1.0], "n" * 129),
        vec("b", [1.0], document="\x00"),
        vec("dup", [1.0], "ns"),
        vec("dup", [2.0], "ns"),
        vec("dup", [3.0], "elsewhere"),  # the same id in another namespace is another vector
    ]
    err = refused(lambda: upsert(vectors, project, items))
    assert violations(err) == [
        ("vectors[0].id", "TOO_LONG"),
        ("vectors[1].namespace", "TOO_LONG"),
        ("vectors[2].document", "INVALID_CHARACTER"),
        ("vectors[4].id", "DUPLICATE_ID"),
    ]
    err = refused(lambda: upsert(vectors, project, []))
    assert violations(err) == [("vectors", "EMPTY_BATCH")]
    err = refused(lambda: upsert(vectors, project, [vec("a", [1.0])], namespace="\x00"))
    assert violations(err) == [("namespace", "INVALID_CHARACTER")]


def test_no_count_limit_but_the_message_size(
    vectors: VectorServiceStub, project: Project, server: ServerThread
) -> None:
    many = [vec(f"v{i}", [1.0, float(i % 7)], "many") for i in range(5000)]
    assert (
        upsert(vectors, project, many, result_view=common_pb2.RESULT_VIEW_COUNTS).inserted == 5000
    )
    huge = [vec(f"h{i}", [0.5] * 4000, "huge") for i in range(4300)]  # about 68 MB
    err = refused(lambda: upsert(vectors, project, huge))
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(server.app.settings.max_message_bytes) in (err.details() or "")


def test_request_id_replays_and_result_views(vectors: VectorServiceStub, project: Project) -> None:
    first = upsert(vectors, project, [vec("a", [1.0, 0.0])], request_id="r-1")
    again = upsert(vectors, project, [vec("a", [1.0, 0.0])], request_id="r-1")
    assert first == again and again.inserted == 1
    err = refused(lambda: upsert(vectors, project, [vec("a", [0.0, 1.0])], request_id="r-1"))
    assert details(err)[0].reason == "REQUEST_ID_REUSED"

    failures = upsert(
        vectors,
        project,
        [vec("b", [1.0, 0.0]), vec("c", [])],
        partial_success=True,
        result_view=common_pb2.RESULT_VIEW_FAILURES,
    )
    assert [(r.index, r.outcome) for r in failures.results] == [(1, common_pb2.OUTCOME_FAILED)]
    counts = upsert(
        vectors, project, [vec("b", [0.0, 1.0])], result_view=common_pb2.RESULT_VIEW_COUNTS
    )
    assert (counts.updated, list(counts.results), list(counts.ids)) == (1, [], [])


def test_get_and_delete(vectors: VectorServiceStub, project: Project) -> None:
    upsert(vectors, project, [vec(f"v{i}", [1.0, float(i)], "docs") for i in range(3)])
    reply = get(vectors, project, ["v2", "nope", "v0"], "docs")
    assert [v.id for v in reply.vectors] == ["v2", "v0"] and list(reply.not_found) == ["nope"]
    assert list(reply.vectors[0].vector_embedding) == [1.0, 2.0]

    request = vector_pb2.BatchDeleteVectorsRequest(
        project_id=project.id, namespace="docs", ids=["v0", "v0", "nope"], request_id="d-1"
    )
    deleted = vectors.BatchDeleteVectors(request, metadata=project.auth)
    assert (deleted.deleted, deleted.not_found) == (1, 2)
    assert [r.outcome for r in deleted.results] == [
        common_pb2.OUTCOME_DELETED, common_pb2.OUTCOME_NOT_FOUND, common_pb2.OUTCOME_NOT_FOUND,
    ]  # fmt: skip
    assert vectors.BatchDeleteVectors(request, metadata=project.auth) == deleted  # a retry
    assert namespaces(vectors, project) == [("docs", 2, 2)]

    too_many = [f"i{i}" for i in range(1001)]
    err = refused(lambda: get(vectors, project, too_many))
    assert details(err)[0].reason == "BATCH_TOO_LARGE"
    err = refused(lambda: get(vectors, project, ["ok", ""]))
    assert violations(err) == [("ids[1]", "REQUIRED")]


def test_namespaces_page_in_order_of_name(vectors: VectorServiceStub, project: Project) -> None:
    for name in ("c", "a", "b"):
        upsert(vectors, project, [vec("x", [1.0], name)])
    request = vector_pb2.ListNamespacesRequest(project_id=project.id, page_size=2)
    first = vectors.ListNamespaces(request, metadata=project.auth)
    assert [n.namespace for n in first.namespaces] == ["a", "b"] and first.next_page_token
    assert first.namespaces[0].index_state == vector_pb2.VECTOR_INDEX_STATE_NONE
    request.page_token = first.next_page_token
    second = vectors.ListNamespaces(request, metadata=project.auth)
    assert [n.namespace for n in second.namespaces] == ["c"] and not second.next_page_token
    request.page_token = "forged"
    err = refused(lambda: vectors.ListNamespaces(request, metadata=project.auth))
    assert details(err)[0].reason == "PAGE_TOKEN_INVALID"


def test_projects_are_isolated(
    vectors: VectorServiceStub, project: Project, server: ServerThread
) -> None:
    other = Project(*server.new_key())
    upsert(vectors, project, [vec("mine", [1.0, 0.0], "shared-name")])
    upsert(vectors, other, [vec("theirs", [0.0, 1.0, 0.0], "shared-name")])  # its own dimension
    assert get(vectors, other, ["mine"], "shared-name").not_found == ["mine"]
    assert namespaces(vectors, other) == [("shared-name", 1, 3)]
    search = vector_pb2.SearchVectorsRequest(
        project_id=other.id, namespace="shared-name", query_vector=[0.0, 1.0, 0.0]
    )
    found = vectors.SearchVectors(search, metadata=other.auth).results
    assert [m.vector.id for m in found] == ["theirs"]
    delete = vector_pb2.BatchDeleteVectorsRequest(
        project_id=other.id, namespace="shared-name", ids=["mine"]
    )
    assert vectors.BatchDeleteVectors(delete, metadata=other.auth).deleted == 0
    assert len(get(vectors, project, ["mine"], "shared-name").vectors) == 1

    # A key names its project: another project's id is refused whatever the RPC.
    foreign = vector_pb2.BatchGetVectorsRequest(project_id=project.id, ids=["mine"])
    err = refused(lambda: vectors.BatchGetVectors(foreign, metadata=other.auth))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    err = refused(lambda: vectors.BatchGetVectors(foreign))
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED
