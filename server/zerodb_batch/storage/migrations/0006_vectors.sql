-- Vectors: one table for every project's embeddings, and a row per namespace holding the
-- namespace's fixed dimension, its count and the state of its HNSW index.
--
-- Search is exact (through the vectors_written btree) until a namespace is large; then a
-- background builder (storage/vector_index.py) gives it a partial HNSW index of its own, built
-- CONCURRENTLY outside any transaction, so these indexes are not created here.
--
-- Every row gets a number from vector_seq when it is written (inserted or replaced). A namespace's
-- index covers its rows with seq <= index_seq (the predicate names that literal), so rows written
-- later never enter it: writes never pay HNSW maintenance per row. Searches read the index for
-- the rows it covers and the btree for the rest (exact), and merge; once enough has been written
-- since, the builder makes a new index with a newer index_seq and drops the old one.

CREATE SEQUENCE vector_seq AS bigint;  -- no CACHE: numbers follow the order of the nextval calls

CREATE TABLE vector_namespaces (
    project_id        text NOT NULL,
    namespace         text NOT NULL,
    dim               integer NOT NULL CHECK (dim BETWEEN 1 AND 4000),  -- fixed by the first vector
    vector_count      bigint NOT NULL DEFAULT 0,
    write_count       bigint NOT NULL DEFAULT 0,  -- vectors ever inserted, replaced or deleted
    -- What ListNamespaces reports: none (exact search), building (a build runs; an older index,
    -- if any, serves meanwhile), ready (the index serves the namespace).
    index_state       text NOT NULL DEFAULT 'none' CHECK (index_state IN ('none', 'building', 'ready')),
    index_name        text,    -- the serving HNSW index, NULL while there is none
    index_seq         bigint,  -- it holds the namespace's rows with seq <= index_seq
    index_write_count bigint,  -- write_count when index_seq was taken: what is new since
    build_failures    integer NOT NULL DEFAULT 0,  -- failed builds in a row
    build_error       text,                         -- the last failure's message
    retry_time        timestamptz,                  -- no new build before this (after a failure)
    create_time       timestamptz NOT NULL DEFAULT now(),
    update_time       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, namespace),
    CHECK ((index_name IS NULL) = (index_seq IS NULL))
);

CREATE TABLE vectors (
    project_id  text NOT NULL,
    namespace   text NOT NULL,
    id          text NOT NULL,
    dim         integer NOT NULL,
    embedding   vector NOT NULL,  -- unsized: each namespace has its own dimension
    metadata    jsonb NOT NULL DEFAULT '{}',
    document    text,
    seq         bigint NOT NULL DEFAULT nextval('vector_seq'),
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, namespace, id),
    CHECK (vector_dims(embedding) = dim)
);
ALTER SEQUENCE vector_seq OWNED BY vectors.seq;

-- Exact search of a namespace (all of it, or what its index does not hold yet: seq > index_seq).
CREATE INDEX vectors_written ON vectors (project_id, namespace, seq);
