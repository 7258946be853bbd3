-- name: memory_upsert
-- One statement for a slice of a batch: binary arrays unnested into rows. Every record's tags sit
-- in one flat array; tag_from/tag_to (1-based, inclusive; from > to means none) slice out its own.
-- `xmax = 0` is true for a freshly inserted row and false for one ON CONFLICT updated.
-- Rows go in id order, so that concurrent upserts of overlapping ids lock them in the same order
-- and never deadlock (the caller also validates a batch in id order, so that successive slices
-- of one transaction keep to that order too). Every lock order here is by code point (COLLATE
-- "C"), which is Python's order of the same ids, whatever the database's collation.
INSERT INTO memories AS m (
    project_id, id, content, memory_type, importance, tags, metadata,
    session_id, agent_id, entity_id)
SELECT %(project_id)s, u.id, u.content, u.memory_type, u.importance,
       COALESCE((%(tag_values)b::text[])[u.tag_from:u.tag_to], '{}'), u.metadata,
       u.session_id, u.agent_id, u.entity_id
FROM unnest(%(ids)b::text[], %(contents)b::text[], %(memory_types)b::text[],
            %(importances)b::float8[], %(tag_from)b::int4[], %(tag_to)b::int4[],
            %(metadata)b::jsonb[], %(session_ids)b::text[], %(agent_ids)b::text[],
            %(entity_ids)b::text[])
     AS u(id, content, memory_type, importance, tag_from, tag_to, metadata,
          session_id, agent_id, entity_id)
ORDER BY u.id COLLATE "C"
ON CONFLICT (project_id, id) DO UPDATE SET  -- keep in step with memory_stage_upsert
    content = EXCLUDED.content,
    memory_type = EXCLUDED.memory_type,
    importance = EXCLUDED.importance,
    tags = EXCLUDED.tags,
    metadata = EXCLUDED.metadata,
    session_id = EXCLUDED.session_id,
    agent_id = EXCLUDED.agent_id,
    entity_id = EXCLUDED.entity_id,
    update_time = now()
RETURNING m.id, (m.xmax = 0) AS inserted;

-- name: memory_get
SELECT id, content, memory_type, importance, tags, metadata,
       session_id, agent_id, entity_id, create_time, update_time
FROM memories
WHERE project_id = %(project_id)s AND id = ANY(%(ids)b::text[]);

-- name: memory_update
-- One statement for a slice of a batch (see memory_upsert on their order). Each column comes
-- with a "set this column?" flag, so one shape of statement serves every mix of present fields and
-- masks; unflagged columns keep their value. create_time is never touched. Its rows are locked
-- first, in id order (see memory_delete). Tags come flat, sliced per row as in memory_upsert. A
-- column no update sets comes as NULL arrays.
WITH locked AS MATERIALIZED (
    SELECT id FROM memories
    WHERE project_id = %(project_id)s AND id = ANY(%(ids)b::text[])
    ORDER BY id COLLATE "C"
    FOR UPDATE
), changed AS (
UPDATE memories AS m SET
    content = CASE WHEN u.set_content THEN u.content ELSE m.content END,
    memory_type = CASE WHEN u.set_memory_type THEN u.memory_type ELSE m.memory_type END,
    importance = CASE WHEN u.set_importance THEN u.importance ELSE m.importance END,
    tags = CASE WHEN u.set_tags
                THEN COALESCE((%(tag_values)b::text[])[u.tag_from:u.tag_to], '{}') ELSE m.tags END,
    metadata = CASE WHEN u.set_metadata THEN u.metadata ELSE m.metadata END,
    session_id = CASE WHEN u.set_session_id THEN u.session_id ELSE m.session_id END,
    agent_id = CASE WHEN u.set_agent_id THEN u.agent_id ELSE m.agent_id END,
    entity_id = CASE WHEN u.set_entity_id THEN u.entity_id ELSE m.entity_id END,
    update_time = now()
FROM unnest(%(ids)b::text[],
            %(set_content)b::bool[], %(content)b::text[],
            %(set_memory_type)b::bool[], %(memory_type)b::text[],
            %(set_importance)b::bool[], %(importance)b::float8[],
            %(set_tags)b::bool[], %(tag_from)b::int4[], %(tag_to)b::int4[],
            %(set_metadata)b::bool[], %(metadata)b::jsonb[],
            %(set_session_id)b::bool[], %(session_id)b::text[],
            %(set_agent_id)b::bool[], %(agent_id)b::text[],
            %(set_entity_id)b::bool[], %(entity_id)b::text[])
     AS u(id, set_content, content, set_memory_type, memory_type, set_importance, importance,
          set_tags, tag_from, tag_to, set_metadata, metadata, set_session_id, session_id,
          set_agent_id, agent_id, set_entity_id, entity_id)
WHERE m.project_id = %(project_id)s AND m.id = u.id AND u.id IN (SELECT id FROM locked)
RETURNING m.id
)  -- the ids that named no memory, as memory_delete answers
SELECT ARRAY(SELECT unnest(%(ids)b::text[]) EXCEPT SELECT id FROM changed);

-- name: memory_delete
-- Locks its rows in id order first, then deletes: one statement, one round trip. Why the
-- `locked` CTE (memory_update has it too): the write visits rows in whatever order its plan has
-- (a hash join, a bitmap scan), so two batches over overlapping ids could deadlock if it took
-- the locks itself. MATERIALIZED keeps the CTE out of the write's plan; whether the write reads
-- it all at once (a hash) or row by row, each row is locked, in id order, before it is written.
WITH locked AS MATERIALIZED (
    SELECT id FROM memories
    WHERE project_id = %(project_id)s AND id = ANY(%(ids)b::text[])
    ORDER BY id COLLATE "C"
    FOR UPDATE
), gone AS (
    DELETE FROM memories  -- the ids again: without them the plan scans the project's rows
    WHERE project_id = %(project_id)s AND id = ANY(%(ids)b::text[])
      AND id IN (SELECT id FROM locked)
    RETURNING id
)  -- the ids that named no memory (one row, almost always an empty array), not every id again
SELECT ARRAY(SELECT unnest(%(ids)b::text[]) EXCEPT SELECT id FROM gone);

-- name: memory_list
-- Newest first with a (create_time, id) keyset: the row comparison is an index condition on
-- memories_recent, so every page costs the same however deep it is. Unset filters are NULL and
-- fold away when the statement is planned with its values (run it unprepared).
SELECT id, content, memory_type, importance, tags, metadata,
       session_id, agent_id, entity_id, create_time, update_time
FROM memories
WHERE project_id = %(project_id)s
  AND (%(memory_type)s::text IS NULL OR memory_type = %(memory_type)s::text)
  AND (%(tags_any)s::text[] IS NULL OR tags && %(tags_any)s::text[])
  AND (%(tags_all)s::text[] IS NULL OR tags @> %(tags_all)s::text[])
  AND (%(session_id)s::text IS NULL OR session_id = %(session_id)s::text)
  AND (%(agent_id)s::text IS NULL OR agent_id = %(agent_id)s::text)
  AND (%(entity_id)s::text IS NULL OR entity_id = %(entity_id)s::text)
  AND (%(min_importance)s::float8 IS NULL OR importance >= %(min_importance)s::float8)
  AND (%(start_time)s::timestamptz IS NULL OR create_time >= %(start_time)s::timestamptz)
  AND (%(end_time)s::timestamptz IS NULL OR create_time < %(end_time)s::timestamptz)
  AND (%(after_time)s::timestamptz IS NULL
       OR (create_time, id) < (%(after_time)s::timestamptz, %(after_id)s::text))
ORDER BY create_time DESC, id DESC
LIMIT %(limit)s;

-- name: memory_stage_create
-- A session-local staging table for streamed chunks; ON COMMIT DELETE ROWS empties it at every
-- commit, so a pooled connection can reuse it and a rolled-back chunk leaves nothing behind.
-- Its columns are memory_copy's, so one COPY payload fits both (a new name for a new shape: a
-- session kept across a deploy cannot hold an older table of the same name). Metadata stays
-- text here and is parsed once, by the cast in memory_stage_upsert.
CREATE TEMP TABLE IF NOT EXISTS memory_chunk_stage (
    project_id text, id text, content text, memory_type text, importance float8, tags text[],
    metadata text, session_id text, agent_id text, entity_id text
) ON COMMIT DELETE ROWS;

-- name: memory_stage_copy
COPY memory_chunk_stage (project_id, id, content, memory_type, importance, tags, metadata,
                         session_id, agent_id, entity_id)
FROM STDIN;

-- name: memory_stage_upsert
-- The staged chunk into memories with upsert semantics; counts (inserted, written).
WITH written AS (
    INSERT INTO memories AS m (
        project_id, id, content, memory_type, importance, tags, metadata,
        session_id, agent_id, entity_id)
    SELECT s.project_id, s.id, s.content, s.memory_type, s.importance, s.tags,
           s.metadata::jsonb, s.session_id, s.agent_id, s.entity_id
    FROM memory_chunk_stage AS s
    ORDER BY s.id COLLATE "C"  -- lock order: see memory_upsert
    ON CONFLICT (project_id, id) DO UPDATE SET  -- keep in step with memory_upsert
        content = EXCLUDED.content,
        memory_type = EXCLUDED.memory_type,
        importance = EXCLUDED.importance,
        tags = EXCLUDED.tags,
        metadata = EXCLUDED.metadata,
        session_id = EXCLUDED.session_id,
        agent_id = EXCLUDED.agent_id,
        entity_id = EXCLUDED.entity_id,
        update_time = now()
    RETURNING (m.xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FROM written;

-- name: memory_copy
-- A chunk of new memories straight into the table (the fast path of streamed loads), in COPY's
-- text format (see storage/copy_text.py).
COPY memories (project_id, id, content, memory_type, importance, tags, metadata,
               session_id, agent_id, entity_id)
FROM STDIN;
