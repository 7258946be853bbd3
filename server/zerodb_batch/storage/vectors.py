"""The vectors table: per-namespace dimensions, set-based upserts, COPY loads, reads and deletes.

Every function works on the connection it is given, inside the caller's transaction where it
writes. A namespace's dimension is fixed by the first vector written to it (see
`fix_dimensions`); a vector of another dimension is refused with DimensionMismatch before
anything of its batch is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector.psycopg import register_vector_async
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from zerodb.v1 import vector_pb2
from zerodb_batch.domain.records import Columns, positions_by
from zerodb_batch.domain.vector import VECTOR, fill_namespaces, request_namespace, write_order
from zerodb_batch.errors import DimensionMismatch, Violation
from zerodb_batch.limits import MAX_HNSW_VECTOR_DIM
from zerodb_batch.storage.loads import IdExists, RetryChunk
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.queries import Q

Embedding = npt.NDArray[np.float32]

# vector_upsert reads its rows from the batch's arrays or from the staging table.
_UPSERT: Final = Q["vector_upsert"].removesuffix(";")
_UPSERT_PARAMS: Final = sql.SQL(_UPSERT).format(source=sql.SQL(Q["vector_rows_params"]))
# Counting on the namespaces' rows: one WITH list ending, in a statement of its own or after
# the upsert's.
_COUNT: Final = sql.SQL(Q["vector_count"])
_COUNT_ADD: Final = sql.SQL(Q["vector_count_add"]).format(count=_COUNT)
_COUNTED: Final = sql.SQL(Q["vector_upsert_counted"])
_UPSERT_PARAMS_COUNTED: Final = _COUNTED.format(upsert=_UPSERT_PARAMS, count=_COUNT)
_UPSERT_STAGE_COUNTED: Final = _COUNTED.format(
    upsert=sql.SQL(_UPSERT).format(source=sql.SQL(Q["vector_rows_stage"])), count=_COUNT
)
_COPY_TYPES: Final = ["text", "text", "int4", "vector", "jsonb", "text"]
UPSERT_SLICE: Final = 1000  # vectors per upsert statement of a batch


@dataclass
class VectorColumns(Columns):
    """Vectors to write, as columns. (namespace, id) pairs must be distinct (validation's job);
    `index` holds the rows' positions in the request, for error paths such as
    `vectors[7].vector_embedding`. `add` takes the values of domain.vector.VECTOR in order."""

    ids: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    embeddings: list[Embedding] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)  # JSON object text
    documents: list[str | None] = field(default_factory=list)

    def add(
        self,
        index: int,
        vid: str,
        namespace: str,
        embedding: Embedding,
        metadata: str = "{}",
        document: str | None = None,
    ) -> None:
        self.index.append(index)
        self.ids.append(vid)
        self.namespaces.append(namespace)
        self.embeddings.append(embedding)
        self.metadata.append(metadata)
        self.documents.append(document or None)

    def without(self, positions: Sequence[int]) -> VectorColumns:
        """These rows less the ones at `positions`."""
        drop, kept = set(positions), VectorColumns()
        for i in range(len(self)):
            if i not in drop:
                kept.add(self.index[i], self.ids[i], self.namespaces[i], self.embeddings[i],
                         self.metadata[i], self.documents[i])  # fmt: skip
        return kept

    def dims(self) -> list[int]:
        return [len(e) for e in self.embeddings]


@dataclass(frozen=True)
class StoredVector:
    """A row of vector_get."""

    id: str
    namespace: str
    embedding: Embedding
    metadata: dict[str, Any]
    document: str | None
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class Namespace:
    """A row of vector_namespace_list; index_state is none, building or ready."""

    namespace: str
    dim: int
    vector_count: int
    index_state: str


def hnsw_kind(dim: int) -> str:
    """The type an HNSW index over `dim` dimensions is built on: pgvector indexes `vector` up to
    2000 dimensions and `halfvec` (half precision) up to 4000."""
    return "vector" if dim <= MAX_HNSW_VECTOR_DIM else "halfvec"


def hnsw_type(dim: int) -> sql.Composed:
    """`vector(D)` or `halfvec(D)`: the cast in an index's expression and in queries that use it."""
    return sql.SQL("{}({})").format(sql.SQL(hnsw_kind(dim)), sql.Literal(dim))


async def register_types(conn: Conn) -> None:
    """Teach this connection pgvector's types (once per connection: the type ids differ between
    databases, so they are looked up, not fixed)."""
    if conn.adapters.types.get("vector") is None:
        await register_vector_async(conn)


async def fix_dimensions(conn: Conn, project_id: str, rows: VectorColumns) -> list[int]:
    """Fix the dimension of each new namespace of `rows` (by its first vector in the request,
    unless a concurrent writer fixed it first) and return the positions in `rows` of the vectors
    whose dimension differs from their namespace's, in request order. Run in the transaction
    that writes the rows (which are in lock order, not the request's)."""
    dims = rows.dims()
    by_request = positions_by(rows.index)
    wanted: dict[str, int] = {}
    for i in by_request:
        wanted.setdefault(rows.namespaces[i], dims[i])
    fixed = await _namespace_dims(conn, project_id, list(wanted))
    if missing := {n: d for n, d in wanted.items() if n not in fixed}:
        claim = {"project_id": project_id, "namespaces": list(missing), "dims": [*missing.values()]}
        await conn.execute(Q["vector_namespace_claim"], claim)
        fixed.update(await _namespace_dims(conn, project_id, list(missing)))
    return [i for i in by_request if fixed[rows.namespaces[i]] != dims[i]]


async def _namespace_dims(conn: Conn, project_id: str, namespaces: list[str]) -> dict[str, int]:
    params = {"project_id": project_id, "namespaces": namespaces}
    cur = await conn.execute(Q["vector_namespace_dims"], params)
    return {row[0]: row[1] for row in await cur.fetchall()}  # type: ignore[misc]


async def check_dimensions(conn: Conn, project_id: str, rows: VectorColumns) -> None:
    """fix_dimensions(), raising DimensionMismatch that names every vector that differs."""
    if wrong := await fix_dimensions(conn, project_id, rows):
        raise DimensionMismatch(await _mismatches(conn, project_id, rows, wrong))


async def _mismatches(
    conn: Conn, project_id: str, rows: VectorColumns, wrong: list[int]
) -> list[tuple[str, str, int, int]]:
    """(path, namespace, its dimension, the vector's) of the rows at positions `wrong`."""
    fixed = await _namespace_dims(conn, project_id, [rows.namespaces[i] for i in wrong])
    return [
        (
            f"vectors[{rows.index[i]}].vector_embedding",
            rows.namespaces[i],
            fixed[rows.namespaces[i]],
            len(rows.embeddings[i]),
        )
        for i in wrong
    ]


async def upsert(conn: Conn, project_id: str, rows: VectorColumns) -> dict[tuple[str, str], bool]:
    """Insert or replace `rows` in one statement: (namespace, id) -> True if inserted, False if
    replaced. Raises DimensionMismatch, having written none of them (the caller's transaction
    must roll back: it may have fixed a new namespace's dimension)."""
    if not rows:
        return {}
    await register_types(conn)
    await check_dimensions(conn, project_id, rows)
    return await _upsert(conn, project_id, rows, counted=True)


async def _count(
    conn: Conn, project_id: str, written: Iterable[tuple[tuple[str, str], bool]]
) -> None:
    """Count what the transaction wrote, ((namespace, id), inserted) pairs, on the namespaces'
    rows: after every vector of it, so that its locks go vectors first, namespaces after (a
    write of one statement counts in that statement: vector_upsert_counted)."""
    added: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for (namespace, _), inserted in written:
        total[namespace] += 1
        added[namespace] += inserted
    if total:
        names = list(total)
        params = {
            "project_id": project_id,
            "namespaces": names,
            "added": [added[n] for n in names],
            "written": [total[n] for n in names],
        }
        await conn.execute(_COUNT_ADD, params)


async def _upsert(
    conn: Conn, project_id: str, rows: VectorColumns, *, counted: bool
) -> dict[tuple[str, str], bool]:
    """One upsert statement; `counted`: it also counts what it wrote on the namespaces' rows
    (only for the transaction's last statement of vectors, see _count)."""
    params = {
        "project_id": project_id,
        "namespaces": rows.namespaces,
        "ids": rows.ids,
        "dims": rows.dims(),
        "embeddings": rows.embeddings,
        "metadata": rows.metadata,
        "documents": rows.documents,
    }
    cur = await conn.execute(_UPSERT_PARAMS_COUNTED if counted else _UPSERT_PARAMS, params)
    return {(row[0], row[1]): row[2] for row in await cur.fetchall()}  # type: ignore[misc]


@dataclass
class Written:
    """What write_batch did: (namespace, id) -> inserted (True) or replaced (False), and the
    violations of the vectors refused for their dimension, by request index (only when
    partial)."""

    written: dict[tuple[str, str], bool]
    refused: dict[int, list[Violation]]


async def write_batch(
    conn: Conn, project_id: str, rows: VectorColumns, *, partial: bool
) -> Written:
    """A BatchUpsertVectors' rows, a statement per UPSERT_SLICE of them (the size of a request
    is bounded only by the message size). Vectors whose dimension is not their namespace's make
    the whole batch DimensionMismatch, or with `partial` are left out and reported."""
    if not rows:
        return Written({}, {})
    await register_types(conn)
    refused: dict[int, list[Violation]] = {}
    if wrong := await fix_dimensions(conn, project_id, rows):
        mismatch = DimensionMismatch(await _mismatches(conn, project_id, rows, wrong))
        if not partial:
            raise mismatch
        for i, violation in zip(wrong, mismatch.violations, strict=True):
            refused[rows.index[i]] = [violation]
        rows = rows.without(wrong)
    if len(rows) <= UPSERT_SLICE:
        return Written(await _upsert(conn, project_id, rows, counted=True), refused)
    written: dict[tuple[str, str], bool] = {}
    for start in range(0, len(rows), UPSERT_SLICE):
        part = rows.since(start, start + UPSERT_SLICE)
        written.update(await _upsert(conn, project_id, part, counted=False))
    await _count(conn, project_id, written.items())
    return Written(written, refused)


async def copy_insert(conn: Conn, project_id: str, rows: VectorColumns) -> None:
    """Insert a chunk of new vectors by binary COPY, all or nothing: IdExists if an id exists
    (the transaction is then failed and must roll back; copy_upsert the chunk instead)."""
    if not rows:
        return
    await register_types(conn)
    await check_dimensions(conn, project_id, rows)
    try:
        async with conn.cursor().copy(Q["vector_copy"]) as copy:
            copy.set_types(["text", *_COPY_TYPES])
            for row in _copy_rows(rows):
                await copy.write_row((project_id, *row))
    except psycopg.errors.UniqueViolation as e:
        raise IdExists from e
    await _count(conn, project_id, (((n, ""), True) for n in rows.namespaces))


async def copy_upsert(conn: Conn, project_id: str, rows: VectorColumns) -> tuple[int, int]:
    """Upsert a chunk: binary COPY into a staging table, then one INSERT ... ON CONFLICT.

    Must run inside a transaction (the staging table empties at commit). Returns
    (inserted, updated).
    """
    if not rows:
        return 0, 0
    await register_types(conn)
    await check_dimensions(conn, project_id, rows)
    await conn.execute(Q["vector_stage_create"])
    async with conn.cursor().copy(Q["vector_stage_copy"]) as copy:
        copy.set_types(_COPY_TYPES)
        for row in _copy_rows(rows):
            await copy.write_row(row)
    cur = await conn.execute(_UPSERT_STAGE_COUNTED, {"project_id": project_id})
    inserted = sum(1 for row in await cur.fetchall() if row[2])
    return inserted, len(rows) - inserted


def _copy_rows(rows: VectorColumns) -> Iterator[tuple[object, ...]]:
    dims = rows.dims()
    for i in range(len(rows)):
        # The metadata is JSON text already: Jsonb sends it as it is, not as a JSON string.
        metadata = Jsonb(rows.metadata[i], dumps=_as_is)
        yield (rows.namespaces[i], rows.ids[i], dims[i], rows.embeddings[i], metadata,
               rows.documents[i])  # fmt: skip


def _as_is(text: str) -> str:
    return text


async def get(
    conn: Conn, project_id: str, namespace: str, ids: Sequence[str]
) -> dict[str, StoredVector]:
    """The vectors of `namespace` with these ids, by id (absent ids are missing)."""
    await register_types(conn)
    params = {"project_id": project_id, "namespace": namespace, "ids": list(ids)}
    cur = conn.cursor(binary=True, row_factory=class_row(_Row))
    await cur.execute(Q["vector_get"], params)
    return {row.id: row.stored() for row in await cur.fetchall()}


@dataclass(frozen=True)
class _Row:
    id: str
    namespace: str
    embedding: Any  # pgvector.Vector
    metadata: dict[str, Any]
    document: str | None
    create_time: datetime
    update_time: datetime

    def stored(self) -> StoredVector:
        return StoredVector(
            self.id, self.namespace, self.embedding.to_numpy(), self.metadata, self.document,
            self.create_time, self.update_time,
        )  # fmt: skip


async def delete(conn: Conn, project_id: str, namespace: str, ids: Sequence[str]) -> set[str]:
    """Delete in one statement; returns the ids that named a vector of the namespace."""
    params = {"project_id": project_id, "namespace": namespace, "ids": list(ids)}
    cur = await conn.execute(Q["vector_delete"], params)
    return {row[0] for row in await cur.fetchall()}  # type: ignore[misc]


async def list_namespaces(conn: Conn, project_id: str, after: str, limit: int) -> list[Namespace]:
    """Up to `limit` namespaces of the project named after `after` ("" for the first page), in
    order of name, with their dimension, count and index state (empty namespaces included:
    a namespace keeps its dimension once fixed)."""
    cur = conn.cursor(row_factory=class_row(Namespace))
    await cur.execute(
        Q["vector_namespace_list"], {"project_id": project_id, "after": after, "limit": limit}
    )
    return await cur.fetchall()


class VectorLoadWriter:
    """StreamUpsertVectors' writer for the load engine.

    While every vector of the stream has been new, a chunk goes by binary COPY straight into the
    table; the first chunk that meets an existing id is rolled back and written again through the
    staging table, as is every later chunk of the stream. A chunk's namespaces are checked and
    its vectors' empty namespaces filled (domain.vector) before its records are validated.
    """

    kind = "vectors"
    rules = VECTOR
    records_field = "vectors"
    response_type = vector_pb2.StreamUpsertVectorsResponse

    def __init__(self) -> None:
        self._all_new = True
        self.project_id = ""
        self.written = 0  # vectors this stream wrote

    def check(self, chunk: vector_pb2.StreamUpsertVectorsRequest) -> None:
        self.project_id = chunk.project_id
        fill_namespaces(chunk.vectors, request_namespace(chunk.namespace))

    def rows(self, chunk: vector_pb2.StreamUpsertVectorsRequest) -> VectorColumns:
        return VectorColumns()

    def order(self, chunk: vector_pb2.StreamUpsertVectorsRequest) -> list[int]:
        return write_order(chunk.vectors)  # after check() gave each vector its namespace

    async def write(
        self, conn: Conn, rows: VectorColumns, started: Callable[[], object]
    ) -> tuple[int, int]:
        started()  # the rows are formatted as they are sent: validation may go on
        if self._all_new:
            try:
                await copy_insert(conn, self.project_id, rows)
            except IdExists:
                self._all_new = False
                raise RetryChunk from None
            self.written += len(rows)
            return len(rows), 0
        counts = await copy_upsert(conn, self.project_id, rows)
        self.written += len(rows)
        return counts
