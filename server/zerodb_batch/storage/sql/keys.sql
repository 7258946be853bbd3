-- name: project_create
INSERT INTO projects (project_id, name) VALUES (%(project_id)s, %(name)s)
ON CONFLICT (project_id) DO NOTHING;

-- name: project_count
SELECT count(*) FROM projects;

-- name: key_create
INSERT INTO api_keys (project_id, key_id, key_hash, prefix, name)
VALUES (%(project_id)s, %(key_id)s, %(key_hash)s, %(prefix)s, %(name)s);

-- name: key_project
SELECT project_id FROM api_keys WHERE key_hash = %(key_hash)s AND revoke_time IS NULL;

-- name: key_list
SELECT key_id, prefix, name, create_time, revoke_time
FROM api_keys WHERE project_id = %(project_id)s ORDER BY create_time;

-- name: key_revoke
UPDATE api_keys SET revoke_time = now()
WHERE key_id = %(key_id)s AND revoke_time IS NULL
RETURNING project_id;
