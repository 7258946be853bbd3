"""The vector contract takes the seed's JSON unchanged, the live API's aliases, and the search
fields added for top_k, metric and index state."""

from __future__ import annotations

from google.protobuf import json_format

from zerodb.v1 import vector_pb2

SEED = (
    '{"vectors":[{"id":"vec-001","vector_embedding":[0.021,-0.043,0.118],'
    '"namespace":"documents","metadata":{"source":"upload","doc_id":"doc-42"}}]}'
)


def test_the_seed_body_parses_unchanged() -> None:
    request = json_format.Parse(SEED, vector_pb2.BatchUpsertVectorsRequest())
    [vector] = request.vectors
    assert (vector.id, vector.namespace) == ("vec-001", "documents")
    assert [round(x, 3) for x in vector.vector_embedding] == [0.021, -0.043, 0.118]
    assert dict(vector.metadata) == {"source": "upload", "doc_id": "doc-42"}


def test_the_live_api_spellings_parse() -> None:
    body = '{"vectors":[{"vector_id":"v","vector_embedding":[1],"vector_metadata":{"a":1}}]}'
    [vector] = json_format.Parse(body, vector_pb2.BatchUpsertVectorsRequest()).vectors
    assert vector.vector_id == "v"
    assert dict(vector.vector_metadata) == {"a": 1}


def test_search_takes_top_k_metric_and_a_threshold() -> None:
    body = (
        '{"query_vector":[0.1,0.2],"namespace":"documents","top_k":1000,'
        '"metric":"VECTOR_METRIC_L2","threshold":-0.5,"include_embeddings":true}'
    )
    request = json_format.Parse(body, vector_pb2.SearchVectorsRequest())
    assert (request.top_k, request.metric) == (1000, vector_pb2.VECTOR_METRIC_L2)
    assert request.HasField("threshold")
    assert vector_pb2.SearchVectorsRequest().metric == vector_pb2.VECTOR_METRIC_UNSPECIFIED


def test_namespaces_report_their_index_state() -> None:
    listed = vector_pb2.VectorNamespace(
        namespace="documents", vector_count=12, dimension=3072,
        index_state=vector_pb2.VECTOR_INDEX_STATE_BUILDING,
    )  # fmt: skip
    assert json_format.MessageToDict(listed)["indexState"] == "VECTOR_INDEX_STATE_BUILDING"
