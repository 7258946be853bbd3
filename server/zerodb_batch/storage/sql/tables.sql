-- name: table_create
INSERT INTO tables (project_id, name, description, indexed_fields)
VALUES (%(project_id)s, %(name)s, %(description)s, %(indexed_fields)s::text[])
RETURNING project_id, table_id, name, description, indexed_fields, create_time;

-- name: table_forget
-- Undoes table_create when its indexes could not be built.
DELETE FROM tables WHERE project_id = %(project_id)s AND table_id = %(table_id)s::bigint;

-- name: table_resolve
SELECT project_id, table_id, name, description, indexed_fields, create_time
FROM tables
WHERE project_id = %(project_id)s AND name = ANY(%(names)s::text[]);

-- name: table_list
-- Keyset pages in name order (names compare byte-wise: the column is COLLATE "C").
SELECT project_id, table_id, name, description, indexed_fields, create_time
FROM tables
WHERE project_id = %(project_id)s AND (%(after)s::text IS NULL OR name > %(after)s::text)
ORDER BY name
LIMIT %(limit)s;

-- name: table_delete
-- Waits for writers holding the row FOR KEY SHARE (table_rows_insert), so no row is inserted
-- into the table after its rows are deleted.
DELETE FROM tables
WHERE project_id = %(project_id)s AND name = %(name)s
RETURNING table_id, indexed_fields;

-- name: table_delete_rows
DELETE FROM table_rows WHERE project_id = %(project_id)s AND table_id = %(table_id)s::bigint;

-- name: table_indexes
-- Our indexes on table_rows (named table_rows_t<table_id>_f<n>) with their state: whether the
-- table still exists with that field n, and whether the index is valid (a CREATE INDEX
-- CONCURRENTLY that was interrupted leaves an invalid one).
SELECT i.relname, x.indisvalid,
       EXISTS (SELECT 1 FROM tables t
               WHERE t.table_id = substring(i.relname FROM '^table_rows_t([0-9]+)_')::bigint
                 AND cardinality(t.indexed_fields)
                     > substring(i.relname FROM '_f([0-9]+)$')::integer) AS wanted
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
WHERE x.indrelid = 'table_rows'::regclass AND i.relname ~ '^table_rows_t[0-9]+_f[0-9]+$';

-- name: table_index_build_begin
-- CreateTable holds this advisory lock shared while it builds indexes; sync_indexes takes it
-- exclusively, or does nothing (the key is any constant, here "zdb_idx").
SELECT pg_advisory_lock_shared(x'7A64625F696478'::bigint);

-- name: table_index_build_end
SELECT pg_advisory_unlock_shared(x'7A64625F696478'::bigint);

-- name: table_index_sync_begin
SELECT pg_try_advisory_lock(x'7A64625F696478'::bigint);

-- name: table_index_sync_end
SELECT pg_advisory_unlock(x'7A64625F696478'::bigint);

-- name: table_fields_indexed
SELECT table_id, indexed_fields FROM tables WHERE cardinality(indexed_fields) > 0;

-- name: table_rows_insert
-- The table's registry row is locked FOR KEY SHARE: a concurrent DeleteTable waits for this
-- insert, and an insert after a DeleteTable inserts nothing (the caller reports NOT_FOUND).
INSERT INTO table_rows (project_id, table_id, row_id, row_data)
SELECT t.project_id, t.table_id, r.row_id, r.row_data
FROM (SELECT project_id, table_id FROM tables
      WHERE project_id = %(project_id)s AND table_id = %(table_id)s::bigint
      FOR KEY SHARE) AS t,
     unnest(%(row_ids)b::uuid[], %(rows)b::jsonb[]) AS r(row_id, row_data);

-- name: table_rows_query
SELECT row_id, row_data, create_time, update_time
FROM table_rows
WHERE project_id = %(project_id)s AND table_id = %(table_id)s::bigint AND {where}
ORDER BY {order}
OFFSET %(skip)s
LIMIT %(limit)s;

-- name: table_rows_count
SELECT count(*)
FROM table_rows
WHERE project_id = %(project_id)s AND table_id = %(table_id)s::bigint AND {where};

-- name: table_rows_update
-- Matched rows are locked and their new value computed first, so a row that does not fit the
-- update raises before anything is written; only rows whose value changes are written.
WITH matched AS (
    SELECT row_id, row_data AS old, {updated} AS new
    FROM table_rows
    WHERE project_id = %(project_id)s AND table_id = %(table_id)s::bigint AND {where}
    FOR UPDATE
), changed AS (
    UPDATE table_rows AS t SET row_data = m.new, update_time = now()
    FROM matched AS m
    WHERE t.project_id = %(project_id)s AND t.table_id = %(table_id)s::bigint AND t.row_id = m.row_id
      AND m.new <> m.old
    RETURNING 1
)
SELECT (SELECT count(*) FROM matched), (SELECT count(*) FROM changed);

-- name: table_rows_delete
DELETE FROM table_rows
WHERE project_id = %(project_id)s AND table_id = %(table_id)s::bigint AND {where};

-- name: table_lock
-- A streamed load's chunk, before its COPY: the table's id, its registry row locked FOR KEY
-- SHARE as table_rows_insert does, so a concurrent DeleteTable waits for the chunk, and a chunk
-- after a DeleteTable finds no table.
SELECT table_id FROM tables
WHERE project_id = %(project_id)s AND name = %(name)s
FOR KEY SHARE;

-- name: table_rows_copy
COPY table_rows (project_id, table_id, row_id, row_data) FROM STDIN;

-- name: table_rows_analyze
-- After a large streamed load (storage/table_load.py).
ANALYZE table_rows;
