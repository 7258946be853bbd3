-- name: project_create
INSERT INTO projects (project_id, name) VALUES (%(project_id)s, %(name)s)
ON CONFLICT (project_id) DO NOTHING;

-- name: project_count
SELECT count(*) FROM projects;

-- name: key_create
INSERT INTO api_keys (project_id, key_id, key_hash, prefix, name, scopes, expire_time)
VALUES (%(project_id)s, %(key_id)s, %(key_hash)s, %(prefix)s, %(name)s, %(scopes)s,
        %(expire_time)s);

-- name: key_grant
-- An expired key is still returned (with its expire_time): the caller tells it apart from an
-- unknown one, and checks the expiry itself at every call, cached or not.
SELECT project_id, scopes, expire_time
FROM api_keys WHERE key_hash = %(key_hash)s AND revoke_time IS NULL;

-- name: key_list
SELECT key_id, prefix, name, create_time, revoke_time, scopes, expire_time
FROM api_keys WHERE project_id = %(project_id)s ORDER BY create_time;

-- name: key_revoke
UPDATE api_keys SET revoke_time = now()
WHERE key_id = %(key_id)s AND revoke_time IS NULL
RETURNING project_id;
