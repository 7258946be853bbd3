-- name: memory_upsert
-- One statement for the whole batch: binary arrays unnested into rows. `xmax = 0` is true for
-- a freshly inserted row and false for one the ON CONFLICT branch updated.
INSERT INTO memories AS m (
    project_id, id, content, memory_type, importance, tags, metadata,
    session_id, agent_id, entity_id)
SELECT %(project_id)s, u.id, u.content, u.memory_type, u.importance,
       ARRAY(SELECT jsonb_array_elements_text(u.tags)), u.metadata,
       u.session_id, u.agent_id, u.entity_id
FROM unnest(%(ids)b::text[], %(contents)b::text[], %(memory_types)b::text[],
            %(importances)b::float8[], %(tags)b::jsonb[], %(metadata)b::jsonb[],
            %(session_ids)b::text[], %(agent_ids)b::text[], %(entity_ids)b::text[])
     AS u(id, content, memory_type, importance, tags, metadata, session_id, agent_id, entity_id)
ON CONFLICT (project_id, id) DO UPDATE SET
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
