-- Tables: schema-free tables of JSON rows.
--
-- `tables` is the registry, one row per table. Names are unique per project and compare byte-wise
-- (COLLATE "C"), so ListTables pages by name the same way on every server. table_id is a compact
-- id from one sequence for the whole database: an index named after it is unique.
--
-- `table_rows` holds the rows of every table. Each indexed field of a table gets a partial
-- expression index on it (`table_rows_t<table_id>_f<n>`, built by storage/tables.py, expressions
-- in storage/table_sql.py). There is no foreign key to `tables`: a check per row would slow bulk
-- loads, so writers lock the table's registry row instead (FOR KEY SHARE), which DeleteTable's
-- delete of that row waits for.

CREATE TABLE tables (
    project_id     text NOT NULL,
    table_id       bigint GENERATED ALWAYS AS IDENTITY,
    name           text COLLATE "C" NOT NULL,
    description    text NOT NULL DEFAULT '',
    indexed_fields text[] NOT NULL DEFAULT '{}',   -- dotted field paths, index n is field n
    create_time    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, table_id),
    UNIQUE (project_id, name)
);

CREATE TABLE table_rows (
    project_id  text NOT NULL,
    table_id    bigint NOT NULL,
    row_id      uuid NOT NULL,                       -- UUIDv7 from the server: time-ordered
    row_data    jsonb NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, table_id, row_id)
);
-- Statistics follow loads. By default autovacuum analyzes a table once a tenth of its rows have
-- changed; here that is a tenth of every table's rows, and until then a freshly loaded table is
-- planned from statistics that predate it: the planner expects no rows for it and walks the
-- primary key instead of the table's field index. So analyze after every 20,000 changed rows
-- (ANALYZE reads a fixed-size sample, so it costs the same on a large table).
ALTER TABLE table_rows SET (autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 20000);

-- One update operator applied to one row (domain/table_update.py has the semantics). `item` is
-- the operator's position in the update, reported when the row does not fit it: SQLSTATE ZB001,
-- DETAIL = item, HINT = the reason, MESSAGE = the JSON type found. A raised error rather than a
-- skipped row: like MongoDB, the whole operation fails and changes nothing.
CREATE FUNCTION table_row_update(doc jsonb, kind text, path text[], val jsonb, item integer)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    depth   integer := cardinality(path);
    node    jsonb;
    missing integer;   -- the first prefix of path that the row lacks, if any
    fresh   jsonb;     -- what a missing field becomes
BEGIN
    FOR i IN 1 .. depth - 1 LOOP
        node := doc #> path[1:i];
        IF node IS NULL THEN
            missing := i;
            EXIT;
        END IF;
        IF jsonb_typeof(node) <> 'object' THEN
            RAISE EXCEPTION USING ERRCODE = 'ZB001', MESSAGE = jsonb_typeof(node),
                DETAIL = item, HINT = 'PARENT_NOT_AN_OBJECT';
        END IF;
    END LOOP;
    node := CASE WHEN missing IS NULL THEN doc #> path END;
    IF node IS NULL THEN
        IF kind IN ('unset', 'pull') THEN
            RETURN doc;
        END IF;
        fresh := CASE kind WHEN 'push' THEN jsonb_build_array(val) ELSE val END;
        missing := coalesce(missing, depth);
        FOR j IN REVERSE depth .. missing + 1 LOOP
            fresh := jsonb_build_object(path[j], fresh);
        END LOOP;
        RETURN jsonb_set(doc, path[1:missing], fresh);
    END IF;
    IF kind = 'set' THEN
        RETURN jsonb_set(doc, path, val);
    ELSIF kind = 'unset' THEN
        RETURN doc #- path;
    ELSIF kind = 'inc' AND jsonb_typeof(node) = 'number' THEN
        RETURN jsonb_set(doc, path, to_jsonb(node::numeric + val::numeric));
    ELSIF kind = 'push' AND jsonb_typeof(node) = 'array' THEN
        RETURN jsonb_set(doc, path, node || jsonb_build_array(val));
    ELSIF kind = 'pull' AND jsonb_typeof(node) = 'array' THEN
        RETURN jsonb_set(doc, path, (
            SELECT coalesce(jsonb_agg(e ORDER BY n), '[]')
            FROM jsonb_array_elements(node) WITH ORDINALITY AS x(e, n)
            WHERE e <> val));
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'ZB001', MESSAGE = jsonb_typeof(node), DETAIL = item,
        HINT = CASE kind WHEN 'inc' THEN 'NOT_A_NUMBER' ELSE 'NOT_AN_ARRAY' END;
END
$$;
