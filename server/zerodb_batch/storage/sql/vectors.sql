-- name: vector_namespace_dims
SELECT namespace, dim
FROM vector_namespaces
WHERE project_id = %(project_id)s AND namespace = ANY(%(namespaces)b::text[]);

-- name: vector_namespace_claim
-- A namespace's dimension is fixed by the first vector written to it. Two first writers insert
-- the same key: the second waits for the first to commit and then does nothing, and reads the
-- winner's dimension with vector_namespace_dims (a new statement sees the committed row).
-- Sorted by code point, so writers claiming several namespaces take them in one order whatever
-- the database's collation (the order every lock on namespaces and vectors follows).
INSERT INTO vector_namespaces (project_id, namespace, dim)
SELECT %(project_id)s, u.namespace, u.dim
FROM unnest(%(namespaces)b::text[], %(dims)b::int4[]) AS u(namespace, dim)
ORDER BY u.namespace COLLATE "C"
ON CONFLICT (project_id, namespace) DO NOTHING;

-- name: vector_upsert
-- Insert or replace every row of the source (distinct (namespace, id) pairs). Replacing gives the
-- row a new seq, which takes it out of the namespace's HNSW index (see migration 0006).
-- `xmax = 0` is true for a freshly inserted row. What was written is counted on the namespaces'
-- rows once the transaction's vectors are all written (vector_upsert_counted, or after several
-- of these, vector_count_add): every write locks its vectors first and its namespaces after.
INSERT INTO vectors AS v (project_id, namespace, id, dim, embedding, metadata, document)
SELECT %(project_id)s, s.namespace, s.id, s.dim, s.embedding, s.metadata, s.document
FROM {source}
ON CONFLICT (project_id, namespace, id) DO UPDATE SET
    dim = EXCLUDED.dim,
    embedding = EXCLUDED.embedding,
    metadata = EXCLUDED.metadata,
    document = EXCLUDED.document,
    seq = EXCLUDED.seq,
    update_time = now()
RETURNING v.namespace, v.id, (v.xmax = 0) AS inserted;

-- name: vector_upsert_counted
-- vector_upsert and its count in one statement, for a write that is one statement: the
-- aggregate reads every written row before a namespace's row is locked, so the vectors are all
-- locked first here too.
WITH written AS (
    {upsert}
), counts AS (
    SELECT namespace, count(*) FILTER (WHERE inserted) AS added, count(*) AS written
    FROM written GROUP BY namespace
), {count}
SELECT namespace, id, inserted FROM written;

-- name: vector_count
-- The end of a WITH list that counts on each namespace's row what a write added (new vectors)
-- and wrote (new and replaced), from `counts (namespace, added, written)` before it. The rows
-- are locked by code point first (see memory_delete on why a CTE), so writers counting on the
-- same namespaces wait for each other rather than deadlock; FOR NO KEY UPDATE is the lock the
-- update itself takes.
locked AS MATERIALIZED (
    SELECT namespace FROM vector_namespaces
    WHERE project_id = %(project_id)s AND namespace IN (SELECT namespace FROM counts)
    ORDER BY namespace COLLATE "C"
    FOR NO KEY UPDATE
), counted AS (
    UPDATE vector_namespaces AS n
    SET vector_count = n.vector_count + c.added,
        write_count = n.write_count + c.written,
        update_time = now()
    FROM counts AS c JOIN locked USING (namespace)
    WHERE n.project_id = %(project_id)s AND n.namespace = c.namespace
    RETURNING n.namespace
)

-- name: vector_rows_params
-- The source of vector_upsert for a batch: binary arrays unnested into rows.
unnest(%(namespaces)b::text[], %(ids)b::text[], %(dims)b::int4[], %(embeddings)b::vector[],
       %(metadata)b::jsonb[], %(documents)b::text[])
    AS s(namespace, id, dim, embedding, metadata, document)

-- name: vector_rows_stage
-- The source of vector_upsert for a streamed chunk: the staging table, in (namespace, id) order
-- by code point, the order a batch's rows come in (domain.vector.write_order), so that writers
-- sharing ids take their row locks in one order and wait rather than deadlock.
(SELECT * FROM vector_chunk_stage ORDER BY namespace COLLATE "C", id COLLATE "C") AS s

-- name: vector_stage_create
-- A session-local staging table for streamed chunks whose ids may exist; ON COMMIT DELETE ROWS
-- empties it at every commit, so a pooled connection can reuse it and a rolled-back chunk leaves
-- nothing behind. Its columns are vector_copy's (less project_id), for one binary row format.
CREATE TEMP TABLE IF NOT EXISTS vector_chunk_stage (
    namespace text, id text, dim int4, embedding vector, metadata jsonb, document text
) ON COMMIT DELETE ROWS;

-- name: vector_stage_copy
COPY vector_chunk_stage (namespace, id, dim, embedding, metadata, document)
FROM STDIN (FORMAT BINARY);

-- name: vector_copy
-- A chunk of new vectors straight into the table (the fast path of streamed loads).
COPY vectors (project_id, namespace, id, dim, embedding, metadata, document)
FROM STDIN (FORMAT BINARY);

-- name: vector_count_add
-- The count of a transaction's several writes (or of a COPY), once they are all written.
WITH counts AS (
    SELECT * FROM unnest(%(namespaces)b::text[], %(added)b::int8[], %(written)b::int8[])
        AS c(namespace, added, written)
), {count}
SELECT count(*) FROM counted;

-- name: vector_get
SELECT id, namespace, embedding, metadata, document, create_time, update_time
FROM vectors
WHERE project_id = %(project_id)s AND namespace = %(namespace)s AND id = ANY(%(ids)b::text[]);

-- name: vector_delete
-- Locks its rows in id order (code point) first, as memory_delete does and for its reason: the
-- delete itself visits rows in its plan's order. Deletes count as writes too: an index full of
-- deleted rows is slower and, once they are many, worth rebuilding (see vector_index_candidates).
WITH locked AS MATERIALIZED (
    SELECT id FROM vectors
    WHERE project_id = %(project_id)s AND namespace = %(namespace)s AND id = ANY(%(ids)b::text[])
    ORDER BY id COLLATE "C"
    FOR UPDATE
), deleted AS (
    DELETE FROM vectors  -- the ids again: without them the plan scans the namespace's rows
    WHERE project_id = %(project_id)s AND namespace = %(namespace)s AND id = ANY(%(ids)b::text[])
      AND id IN (SELECT id FROM locked)
    RETURNING id
), counted AS (
    UPDATE vector_namespaces
    SET vector_count = vector_count - (SELECT count(*) FROM deleted),
        write_count = write_count + (SELECT count(*) FROM deleted),
        update_time = now()
    WHERE project_id = %(project_id)s AND namespace = %(namespace)s
      AND EXISTS (SELECT FROM deleted)
)
SELECT id FROM deleted;

-- name: vector_namespace_list
-- Keyset pages in order of name.
SELECT namespace, dim, vector_count, index_state
FROM vector_namespaces
WHERE project_id = %(project_id)s AND namespace > %(after)s
ORDER BY namespace
LIMIT %(limit)s;

-- name: vector_namespace_get
-- What a search needs to know of its namespace.
SELECT dim, index_name, index_seq
FROM vector_namespaces
WHERE project_id = %(project_id)s AND namespace = %(namespace)s;

-- name: vector_search_settings
-- A search's settings, for the connection's session: how many candidates the HNSW scan keeps,
-- and iterative scans (pgvector 0.8) in relaxed order, which the search statement orders itself.
SELECT set_config('hnsw.ef_search', %s, false), set_config('hnsw.max_scan_tuples', %s, false),
       set_config('hnsw.iterative_scan', 'relaxed_order', false);

-- name: vector_search
-- Composed by storage/vector_search.py: the parts are vector_search_ann and/or
-- vector_search_exact, joined by UNION ALL. The parts may return their rows slightly out of
-- order (iterative index scans): the final order is set here, by the full-precision distance.
SELECT id, distance, metadata, document, embedding, create_time, update_time
FROM ({parts}) AS found
ORDER BY distance, id
LIMIT %(top_k)s;

-- name: vector_search_ann
-- The rows of the namespace's HNSW index (seq <= index_seq), nearest first by the index's own
-- expression: `embedding::vector(D)` (or halfvec(D)) with the same literal project, namespace and
-- seq as the index's predicate, so any plan, custom or generic, can use the partial index.
SELECT id, embedding {op} %(query)b::vector AS distance, metadata, document,
       {embedding} AS embedding, create_time, update_time
FROM vectors
WHERE project_id = {project_id} AND namespace = {namespace} AND seq <= {seq} {condition}
ORDER BY embedding::{itype} {op} %(query)b::vector::{itype}
LIMIT %(top_k)s

-- name: vector_search_exact
-- Exact: every row of the namespace after `seq` (all of it when there is no index), through the
-- vectors_written btree. The distance is computed on the full vectors, so no index can serve it.
SELECT id, embedding {op} %(query)b::vector AS distance, metadata, document,
       {embedding} AS embedding, create_time, update_time
FROM vectors
WHERE project_id = {project_id} AND namespace = {namespace} AND seq > {seq} {condition}
ORDER BY distance
LIMIT %(top_k)s
