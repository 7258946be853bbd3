"""VectorService: batch and streamed upserts, similarity search, reads, deletes, namespaces."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from zerodb.v1 import vector_pb2, vector_pb2_grpc
from zerodb_batch import limits
from zerodb_batch.api import Ctx, results
from zerodb_batch.api.load_engine import LoadEngine
from zerodb_batch.domain.page_token import PageTokens, page_size
from zerodb_batch.domain.records import RecordParser
from zerodb_batch.domain.struct_json import to_struct
from zerodb_batch.domain.timestamps import to_timestamp
from zerodb_batch.domain.validate import Checker, check_batch_size, check_ids, check_request_id
from zerodb_batch.domain.vector import (
    VECTOR,
    fill_namespaces,
    parse_search,
    request_namespace,
    write_order,
)
from zerodb_batch.storage import vectors
from zerodb_batch.storage.idempotency import write_once
from zerodb_batch.storage.pool import Conn, Database
from zerodb_batch.storage.vector_index import IndexBuilder
from zerodb_batch.storage.vector_search import (
    Match,
    Metric,
    NamespaceCache,
    Search,
    Tuning,
    metadata_condition,
    search,
)

_UPSERTED = {results.INSERTED: "inserted", results.UPDATED: "updated", results.FAILED: "failed"}
_DELETED = {results.DELETED: "deleted", results.NOT_FOUND: "not_found"}
_METRICS: Final = {
    vector_pb2.VECTOR_METRIC_UNSPECIFIED: Metric.COSINE,
    vector_pb2.VECTOR_METRIC_COSINE: Metric.COSINE,
    vector_pb2.VECTOR_METRIC_L2: Metric.L2,
    vector_pb2.VECTOR_METRIC_INNER_PRODUCT: Metric.INNER_PRODUCT,
}
_INDEX_STATES: Final = {
    "none": vector_pb2.VECTOR_INDEX_STATE_NONE,
    "building": vector_pb2.VECTOR_INDEX_STATE_BUILDING,
    "ready": vector_pb2.VECTOR_INDEX_STATE_READY,
}


class VectorServicer(vector_pb2_grpc.VectorServiceServicer):
    def __init__(
        self,
        db: Database,
        tokens: PageTokens,
        builder: IndexBuilder | None = None,
        tuning: Tuning | None = None,
    ) -> None:
        self._db = db
        self._tokens = tokens
        self._builder = builder
        self._tuning = tuning or Tuning()
        self._namespaces = NamespaceCache()

    async def BatchUpsertVectors(
        self, request: vector_pb2.BatchUpsertVectorsRequest, context: Ctx
    ) -> vector_pb2.BatchUpsertVectorsResponse:
        # No count limit (the message size bounds a batch): only an empty one is refused.
        check_batch_size("vectors", len(request.vectors), len(request.vectors))
        check_request_id(request.request_id)
        items = request.vectors
        fill_namespaces(items, request_namespace(request.namespace))
        parser = RecordParser(
            items,
            VECTOR,
            vectors.VectorColumns(),
            field_name="vectors",
            partial=request.partial_success,
            order=write_order(items),
        )
        batch = parser.parse_all()  # before the transaction: no connection held meanwhile

        async def write(conn: Conn) -> vector_pb2.BatchUpsertVectorsResponse:
            done = await vectors.write_batch(
                conn, request.project_id, batch.rows, partial=request.partial_success
            )
            rows, outcome = batch.rows, {True: results.INSERTED, False: results.UPDATED}
            written = []
            for index, vid, namespace in zip(rows.index, rows.ids, rows.namespaces, strict=True):
                if index in done.refused:  # its dimension is not its namespace's
                    batch.failures[index], batch.sent_ids[index] = done.refused[index], vid
                else:
                    written.append((index, vid, outcome[done.written[(namespace, vid)]]))
            outcomes = results.Outcomes(len(items), batch)
            for index, vid, result in written:
                outcomes.set(index, vid, result)
            response = vector_pb2.BatchUpsertVectorsResponse()
            return results.fill(response, outcomes, _UPSERTED, request.result_view)

        done = await write_once(self._db, request, vector_pb2.BatchUpsertVectorsResponse, write)
        return done.response

    async def StreamUpsertVectors(
        self, request_iterator: AsyncIterator[vector_pb2.StreamUpsertVectorsRequest], context: Ctx
    ) -> vector_pb2.StreamUpsertVectorsResponse:
        writer = vectors.VectorLoadWriter()
        try:
            response: vector_pb2.StreamUpsertVectorsResponse = await LoadEngine(
                self._db, writer
            ).run(request_iterator)
        finally:
            if writer.written and self._builder is not None:
                self._builder.wake()  # a large namespace is searched exactly until indexed
        return response

    async def SearchVectors(
        self, request: vector_pb2.SearchVectorsRequest, context: Ctx
    ) -> vector_pb2.SearchVectorsResponse:
        query = parse_search(request)
        spec = Search(
            namespace=query.namespace,
            query=query.query,
            top_k=query.top_k,
            metric=_METRICS[request.metric],
            min_similarity=query.min_similarity,
            condition=metadata_condition(query.filter),
            include_embeddings=request.include_embeddings,
        )
        async with self._db.connection() as conn:
            found = await search(conn, request.project_id, spec, self._tuning, self._namespaces)
        return vector_pb2.SearchVectorsResponse(
            results=[_match(m, query.namespace, request.include_embeddings) for m in found]
        )

    async def BatchGetVectors(
        self, request: vector_pb2.BatchGetVectorsRequest, context: Ctx
    ) -> vector_pb2.BatchGetVectorsResponse:
        namespace = _checked_ids(request)
        async with self._db.connection() as conn:
            found = await vectors.get(conn, request.project_id, namespace, request.ids)
        return vector_pb2.BatchGetVectorsResponse(
            vectors=[to_message(found[i]) for i in request.ids if i in found],
            not_found=[i for i in request.ids if i not in found],
        )

    async def BatchDeleteVectors(
        self, request: vector_pb2.BatchDeleteVectorsRequest, context: Ctx
    ) -> vector_pb2.BatchDeleteVectorsResponse:
        namespace = _checked_ids(request)
        check_request_id(request.request_id)

        async def write(conn: Conn) -> vector_pb2.BatchDeleteVectorsResponse:
            deleted = await vectors.delete(conn, request.project_id, namespace, request.ids)
            outcomes = results.delete_outcomes(request.ids, deleted)
            response = vector_pb2.BatchDeleteVectorsResponse()
            return results.fill(response, outcomes, _DELETED, request.result_view)

        done = await write_once(
            self._db, request, vector_pb2.BatchDeleteVectorsResponse, write, one_statement=True
        )
        return done.response

    async def ListNamespaces(
        self, request: vector_pb2.ListNamespacesRequest, context: Ctx
    ) -> vector_pb2.ListNamespacesResponse:
        checker = Checker("")
        size = page_size(checker, request.page_size, limits.DEFAULT_NAMESPACES_PAGE_SIZE)
        checker.raise_if_any("the list request is invalid")
        after = self._tokens.decode(request, (str,))
        async with self._db.connection() as conn:
            # One namespace more than the page says whether another page follows.
            found = await vectors.list_namespaces(
                conn, request.project_id, str(after[0]) if after else "", size + 1
            )
        page, token = self._tokens.page(request, found, size, lambda n: (n.namespace,))
        return vector_pb2.ListNamespacesResponse(
            namespaces=[
                vector_pb2.VectorNamespace(
                    namespace=n.namespace,
                    vector_count=n.vector_count,
                    dimension=n.dim,
                    index_state=_INDEX_STATES[n.index_state],
                )
                for n in page
            ],
            next_page_token=token,
        )


def _checked_ids(
    request: vector_pb2.BatchGetVectorsRequest | vector_pb2.BatchDeleteVectorsRequest,
) -> str:
    """The request's namespace, its ids checked (1 to MAX_VECTOR_IDS, each valid)."""
    check_batch_size("ids", len(request.ids), limits.MAX_VECTOR_IDS)
    check_ids("ids", request.ids)
    return request_namespace(request.namespace)


def _match(m: Match, namespace: str, embeddings: bool) -> vector_pb2.VectorMatch:
    vector = vector_pb2.Vector(
        id=m.id,
        namespace=namespace,
        metadata=to_struct(m.metadata),
        document=m.document or "",
        create_time=to_timestamp(m.create_time),
        update_time=to_timestamp(m.update_time),
    )
    if embeddings and m.embedding is not None:
        vector.vector_embedding.extend(m.embedding.tolist())
    return vector_pb2.VectorMatch(vector=vector, similarity=m.similarity, distance=m.distance)


def to_message(v: vectors.StoredVector) -> vector_pb2.Vector:
    return vector_pb2.Vector(
        id=v.id,
        namespace=v.namespace,
        vector_embedding=v.embedding.tolist(),
        metadata=to_struct(v.metadata),
        document=v.document or "",
        create_time=to_timestamp(v.create_time),
        update_time=to_timestamp(v.update_time),
    )
