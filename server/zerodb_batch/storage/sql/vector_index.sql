-- name: vector_index_lock
-- One builder at a time across every server process: index builds on one table cannot overlap
-- anyway (CREATE INDEX CONCURRENTLY takes a lock that conflicts with itself), and two waiting on
-- each other's snapshots could deadlock. Session-level: a builder that dies releases it.
SELECT pg_try_advisory_lock(%(key)s);

-- name: vector_index_unlock
SELECT pg_advisory_unlock(%(key)s);

-- name: vector_index_orphans
-- Our HNSW indexes that no namespace serves from: a build that failed or whose process died
-- (INVALID, yet still updated by every write of its namespace), or an old index not dropped yet.
-- Only called under the builders' lock, so none of these is being built.
SELECT c.relname
FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
WHERE i.indrelid = 'vectors'::regclass AND starts_with(c.relname, 'vectors_hnsw_')
  AND NOT EXISTS (SELECT FROM vector_namespaces AS n WHERE n.index_name = c.relname);

-- name: vector_index_unstick
-- Builds whose process died left their namespace `building`. The rows are locked by code point
-- first, the order writes count on them in (vector_count_add), so that this and a write over
-- several of them wait for each other rather than deadlock.
WITH stuck AS MATERIALIZED (
    SELECT project_id, namespace FROM vector_namespaces
    WHERE index_state = 'building'
    ORDER BY project_id COLLATE "C", namespace COLLATE "C"
    FOR NO KEY UPDATE
)
UPDATE vector_namespaces AS n
SET index_state = CASE WHEN n.index_name IS NULL THEN 'none' ELSE 'ready' END,
    update_time = now()
FROM stuck AS s
WHERE n.project_id = s.project_id AND n.namespace = s.namespace AND n.index_state = 'building';

-- name: vector_index_candidates
-- Namespaces that have reached the threshold without an index, or whose index misses too much
-- (written since it was built: those rows are searched exactly). Unindexed ones first, small ones
-- first: they are quick to make fast. `overdue`: an index misses as many rows as the namespace
-- holds; `quiet`: nothing was written for a while (see vector_index.Activity).
SELECT project_id, namespace, dim, index_name, write_count,
       index_name IS NOT NULL AND write_count - index_write_count >= vector_count AS overdue,
       update_time < now() - make_interval(secs => %(quiet_seconds)s) AS quiet
FROM vector_namespaces
WHERE vector_count >= %(threshold)s
  AND (retry_time IS NULL OR retry_time <= now())
  AND (index_name IS NULL
       OR write_count - index_write_count >= greatest(%(threshold)s, %(fraction)s * vector_count))
ORDER BY index_name IS NOT NULL, vector_count
LIMIT %(limit)s;

-- name: vector_index_begin
-- The new index will hold the namespace's rows numbered up to `seq`: every row written from now
-- on gets a higher number. (Autocommit: CREATE INDEX CONCURRENTLY then waits for the writers
-- that took lower numbers, so none of those rows is missed.)
UPDATE vector_namespaces
SET index_state = 'building', update_time = now()
WHERE project_id = %(project_id)s AND namespace = %(namespace)s
RETURNING write_count, nextval('vector_seq') AS seq;

-- name: vector_index_create
CREATE INDEX CONCURRENTLY {name} ON vectors
USING hnsw ((embedding::{itype}) {opclass}) WITH (m = {m}, ef_construction = {ef_construction})
WHERE project_id = {project_id} AND namespace = {namespace} AND seq <= {seq};

-- name: vector_index_ready
UPDATE vector_namespaces
SET index_state = 'ready', index_name = %(index_name)s, index_seq = %(seq)s,
    index_write_count = %(write_count)s, build_failures = 0, build_error = NULL,
    retry_time = NULL, update_time = now()
WHERE project_id = %(project_id)s AND namespace = %(namespace)s;

-- name: vector_index_failed
-- Back to exact search (or the old index), and no new attempt for a while: the pause doubles
-- with each failure in a row, up to 64 times.
UPDATE vector_namespaces
SET index_state = CASE WHEN index_name IS NULL THEN 'none' ELSE 'ready' END,
    build_failures = build_failures + 1, build_error = %(error)s,
    retry_time = now() + make_interval(secs => %(retry_seconds)s * 2 ^ least(build_failures, 6)),
    update_time = now()
WHERE project_id = %(project_id)s AND namespace = %(namespace)s;

-- name: vector_index_drop
DROP INDEX CONCURRENTLY IF EXISTS {name};

-- name: vector_index_analyze
ANALYZE vectors;
