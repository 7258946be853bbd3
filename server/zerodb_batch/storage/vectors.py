"""The vectors table: per-namespace dimensions, set-based upserts, COPY loads, reads and deletes.

Every function works on the connection it is given, inside the caller's transaction where it
writes. A namespace's dimension is fixed by the first vector written to it (see
`fix_dimensions`); a vector of another dimension is refused with DimensionMismatch before
anything of its batch is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
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

from zerodb_batch.errors import DimensionMismatch
from zerodb_batch.limits import MAX_HNSW_VECTOR_DIM
from zerodb_batch.storage.loads import IdExists
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.queries import Q

Embedding = npt.NDArray[np.float32]

# vector_upsert reads its rows from the batch's arrays or from the staging table.
_UPSERT_PARAMS: Final = sql.SQL(Q["vector_upsert"]).format(source=sql.SQL(Q["vector_rows_params"]))
_UPSERT_STAGE: Final = sql.SQL(Q["vector_upsert"]).format(source=sql.SQL(Q["vector_rows_stage"]))
_COPY_TYPES: Final = ["text", "text", "int4", "vector", "jsonb", "text"]


@dataclass
class VectorColumns:
    """Vectors to write, as columns. (namespace, id) pairs must be distinct (validation's job);
    `indexes` are the rows' positions in the request, for error paths such as
    `vectors[7].vector_embedding`."""

    indexes: list[int] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    embeddings: list[Embedding] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)  # JSON object text
    documents: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def add(
        self,
        index: int,
        namespace: str,
        vid: str,
        embedding: Embedding,
        metadata: str = "{}",
        document: str | None = None,
    ) -> None:
        self.indexes.append(index)
        self.namespaces.append(namespace)
        self.ids.append(vid)
        self.embeddings.append(embedding)
        self.metadata.append(metadata)
        self.documents.append(document)

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
    """Fix the dimension of each new namespace of `rows` (by its first vector in `rows`, unless a
    concurrent writer fixed it first) and return the positions in `rows` of the vectors whose
    dimension differs from their namespace's. Run in the transaction that writes the rows."""
    dims = rows.dims()
    wanted: dict[str, int] = {}
    for namespace, dim in zip(rows.namespaces, dims, strict=True):
        wanted.setdefault(namespace, dim)
    fixed = await _namespace_dims(conn, project_id, list(wanted))
    if missing := {n: d for n, d in wanted.items() if n not in fixed}:
        claim = {"project_id": project_id, "namespaces": list(missing), "dims": [*missing.values()]}
        await conn.execute(Q["vector_namespace_claim"], claim)
        fixed.update(await _namespace_dims(conn, project_id, list(missing)))
    return [i for i, (n, d) in enumerate(zip(rows.namespaces, dims, strict=True)) if fixed[n] != d]


async def _namespace_dims(conn: Conn, project_id: str, namespaces: list[str]) -> dict[str, int]:
    params = {"project_id": project_id, "namespaces": namespaces}
    cur = await conn.execute(Q["vector_namespace_dims"], params)
    return {row[0]: row[1] for row in await cur.fetchall()}  # type: ignore[misc]


async def check_dimensions(conn: Conn, project_id: str, rows: VectorColumns) -> None:
    """fix_dimensions(), raising DimensionMismatch that names every vector that differs."""
    if wrong := await fix_dimensions(conn, project_id, rows):
        fixed = await _namespace_dims(conn, project_id, [rows.namespaces[i] for i in wrong])
        raise DimensionMismatch(
            (
                f"vectors[{rows.indexes[i]}].vector_embedding",
                rows.namespaces[i],
                fixed[rows.namespaces[i]],
                len(rows.embeddings[i]),
            )
            for i in wrong
        )


async def upsert(conn: Conn, project_id: str, rows: VectorColumns) -> dict[tuple[str, str], bool]:
    """Insert or replace `rows` in one statement: (namespace, id) -> True if inserted, False if
    replaced. Raises DimensionMismatch, having written none of them (the caller's transaction
    must roll back: it may have fixed a new namespace's dimension)."""
    if not rows:
        return {}
    await register_types(conn)
    await check_dimensions(conn, project_id, rows)
    params = {
        "project_id": project_id,
        "namespaces": rows.namespaces,
        "ids": rows.ids,
        "dims": rows.dims(),
        "embeddings": rows.embeddings,
        "metadata": rows.metadata,
        "documents": rows.documents,
    }
    cur = await conn.execute(_UPSERT_PARAMS, params)
    return {(row[0], row[1]): row[2] for row in await cur.fetchall()}  # type: ignore[misc]


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
    added = Counter(rows.namespaces)
    params = {"project_id": project_id, "namespaces": list(added), "added": list(added.values())}
    await conn.execute(Q["vector_count_add"], params)


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
    cur = await conn.execute(_UPSERT_STAGE, {"project_id": project_id})
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
