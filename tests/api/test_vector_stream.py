"""StreamUpsertVectors and `zerodb-batch load vectors` through a real server: chunks committed
with the load's progress, a cut stream resumed writing each vector once, the seed's body through
grpcurl, and every VectorService RPC while PostgreSQL is away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from tests.api.test_memory_grpcurl import call
from tests.api.test_memory_stream import Feed, held_by_a_chunk
from tests.api.test_vector_batch import refused, upsert, vec, violations
from tests.plugins.checks import Outage, details, last_offset, unavailable_then_recovers, wait_for
from tests.plugins.server import Project, ServerThread
from zerodb.v1 import load_pb2, vector_pb2
from zerodb.v1.load_pb2_grpc import LoadServiceStub
from zerodb.v1.vector_pb2_grpc import VectorServiceStub

Db = psycopg.Connection[tuple[object, ...]]
Request = vector_pb2.StreamUpsertVectorsRequest


@pytest.fixture
def vectors(channel: grpc.Channel) -> VectorServiceStub:
    return VectorServiceStub(channel)


@pytest.fixture
def loads(channel: grpc.Channel) -> LoadServiceStub:
    return LoadServiceStub(channel)


def chunk(project: Project, offset: int, n: int = 4, load_id: str = "vl-1", **kw: Any) -> Request:
    items = [vec(f"{offset}-{i}", [1.0, float(offset), float(i)]) for i in range(n)]
    return Request(project_id=project.id, load_id=load_id, offset=offset, vectors=items, **kw)


def ids(db: Db, project: Project, namespace: str = "default") -> list[str]:
    rows = db.execute(
        "SELECT id FROM vectors WHERE project_id = %s AND namespace = %s ORDER BY id",
        (project.id, namespace),
    ).fetchall()
    return [str(r[0]) for r in rows]


def get_load(stub: LoadServiceStub, project: Project, load_id: str = "vl-1") -> load_pb2.Load:
    request = load_pb2.GetLoadRequest(project_id=project.id, load_id=load_id)
    return stub.GetLoad(request, metadata=project.auth).load


def test_chunks_commit_as_a_load_of_vectors(
    vectors: VectorServiceStub, loads: LoadServiceStub, project: Project, db: Db
) -> None:
    reply = vectors.StreamUpsertVectors(
        iter([chunk(project, o, namespace="loaded") for o in range(3)]), metadata=project.auth
    )
    assert (reply.chunks_committed, reply.load.kind, reply.load.inserted) == (3, "vectors", 12)
    assert reply.load.state == load_pb2.LOAD_STATE_DONE
    assert get_load(loads, project) == reply.load
    assert len(ids(db, project, "loaded")) == 12

    # A second load over the same ids replaces them (through the staging table).
    again = vectors.StreamUpsertVectors(
        iter([chunk(project, o, load_id="vl-2", namespace="loaded") for o in range(3)]),
        metadata=project.auth,
    )
    assert (again.load.inserted, again.load.updated) == (0, 12)


def test_cut_stream_resumed_writes_every_vector_once(
    vectors: VectorServiceStub, loads: LoadServiceStub, project: Project, db: Db
) -> None:
    feed = Feed()
    cut = vectors.StreamUpsertVectors.future(iter(feed), metadata=project.auth)
    for offset in range(3):
        feed.send(chunk(project, offset))  # type: ignore[arg-type]
    wait_for(lambda: last_offset(loads, project, "vl-1") == 2 or None, "chunk 2 to commit")
    cut.cancel()
    feed.close()
    assert get_load(loads, project).state == load_pb2.LOAD_STATE_RUNNING

    reply = vectors.StreamUpsertVectors(
        iter([chunk(project, o) for o in range(1, 5)]), metadata=project.auth
    )
    assert (reply.chunks_committed, reply.chunks_skipped) == (2, 2)
    assert (reply.load.inserted, reply.load.updated) == (20, 0)
    assert ids(db, project) == sorted(f"{o}-{i}" for o in range(5) for i in range(4))


def test_invalid_vectors_refuse_their_chunk_unless_partial(
    vectors: VectorServiceStub, project: Project, db: Db
) -> None:
    bad = chunk(project, 0)
    bad.vectors[2].vector_embedding[1] = float("nan")
    err = refused(lambda: vectors.StreamUpsertVectors(iter([bad]), metadata=project.auth))
    assert violations(err) == [("vectors[2].vector_embedding", "NOT_FINITE")]
    assert ids(db, project) == []

    bad.partial_success = True
    reply = vectors.StreamUpsertVectors(iter([bad]), metadata=project.auth)
    assert (reply.load.inserted, reply.load.failed) == (3, 1)
    assert reply.failures[0].index == 2

    other_dim = Request(
        project_id=project.id, load_id="vl-dim", offset=0, vectors=[vec("w", [1.0, 2.0])]
    )
    err = refused(lambda: vectors.StreamUpsertVectors(iter([other_dim]), metadata=project.auth))
    assert details(err)[0].reason == "DIMENSION_MISMATCH"


def test_a_chunk_of_new_vectors_takes_them_in_code_point_order(
    vectors: VectorServiceStub, project: Project, db: Db, database_url: str
) -> None:
    """As a memory chunk does (see test_memory_stream): while the chunk waits on "b", inserted
    and not committed by another session, it holds "a" and not yet "c"."""
    upsert(vectors, project, [vec("z", [1.0, 2.0, 3.0])])  # the namespace, 3 dimensions
    insert = (
        "INSERT INTO vectors (project_id, namespace, id, dim, embedding)"
        " VALUES (%s, 'default', %s, 3, '[1,2,3]')"
    )
    items = [vec(i, [1.0, 2.0, 3.0]) for i in "cab"]
    chunk = Request(project_id=project.id, load_id="ordered", vectors=items, final=True)
    held, reply = held_by_a_chunk(
        vectors.StreamUpsertVectors, chunk, project, insert, (db, database_url)
    )
    assert held == [True, False]
    assert (reply.load.inserted, ids(db, project)) == (3, ["a", "b", "c", "z"])


def test_load_vectors_command(
    server: ServerThread, vectors: VectorServiceStub, project: Project, db: Db, tmp_path: Path
) -> None:
    lines = [json.dumps({"id": f"f{i}", "vector_embedding": [1.0, i, 2.0], "metadata": {"i": i}})
             for i in range(7)]  # fmt: skip
    lines.insert(3, json.dumps({"vector_id": "live", "vector_embedding": [0.5, 0.5, 0.5]}))
    lines.insert(5, json.dumps({"id": "x", "vector_embedding": ["one"]}))
    path = tmp_path / "vectors.jsonl"
    path.write_text("\n".join(lines) + "\n")
    command = [sys.executable, "-m", "zerodb_batch", "load", "vectors", str(path),
               "--project", project.id, "--target", server.address, "--namespace", "files",
               "--chunk-size", "3"]  # fmt: skip
    env = {**os.environ, "ZERODB_API_KEY": project.key}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr  # loaded, but line 6 was not a vector
    assert "line 6: skipped: vector_embedding must be a list of numbers" in done.stderr
    assert "8 inserted, 0 updated, 0 refused" in done.stdout
    assert ids(db, project, "files") == sorted(["live", *(f"f{i}" for i in range(7))])


def test_seed_body_through_grpcurl(server: ServerThread, project: Project) -> None:
    seed = {"vectors": [{"id": "vec-001", "vector_embedding": [0.021, -0.043, 0.118],
                         "namespace": "documents",
                         "metadata": {"source": "upload", "doc_id": "doc-42"}}]}  # fmt: skip
    reply = call(server, project, "VectorService/BatchUpsertVectors", seed)
    assert (reply["inserted"], reply["ids"]) == (1, ["vec-001"])
    found = call(
        server,
        project,
        "VectorService/SearchVectors",
        {"query_vector": [0.021, -0.043, 0.118], "namespace": "documents", "top_k": 1},
    )
    assert found["results"][0]["vector"]["id"] == "vec-001"


def test_each_rpc_is_unavailable_then_recovers(outage: tuple[Outage, ServerThread]) -> None:
    down, running = outage
    project = Project(*running.new_key())
    with grpc.insecure_channel(running.address) as channel:
        calls = _calls(VectorServiceStub(channel), project)
        for rpc in calls.values():
            rpc()
        unavailable_then_recovers(down, calls)


def _calls(stub: VectorServiceStub, project: Project) -> dict[str, Callable[[], object]]:
    auth, pid = project.auth, project.id
    loads = iter(range(1000))

    def stream() -> object:
        return stub.StreamUpsertVectors(
            iter([chunk(project, 0, load_id=f"outage-{next(loads)}")]), metadata=auth
        )

    return {
        "upsert": lambda: stub.BatchUpsertVectors(
            vector_pb2.BatchUpsertVectorsRequest(
                project_id=pid, vectors=[vec("a", [1.0, 1.0, 1.0])]
            ),
            metadata=auth,
        ),
        "stream": stream,
        "search": lambda: stub.SearchVectors(
            vector_pb2.SearchVectorsRequest(project_id=pid, query_vector=[1.0, 1.0, 1.0]),
            metadata=auth,
        ),
        "get": lambda: stub.BatchGetVectors(
            vector_pb2.BatchGetVectorsRequest(project_id=pid, ids=["a"]), metadata=auth
        ),
        "delete": lambda: stub.BatchDeleteVectors(
            vector_pb2.BatchDeleteVectorsRequest(project_id=pid, ids=["zz"]), metadata=auth
        ),
        "namespaces": lambda: stub.ListNamespaces(
            vector_pb2.ListNamespacesRequest(project_id=pid), metadata=auth
        ),
    }
