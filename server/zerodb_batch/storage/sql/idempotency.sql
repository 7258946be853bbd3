-- name: idempotency_claim
-- The first caller inserts the row; a concurrent retry waits on the primary key until the
-- first transaction ends, then finds the row (and its response) instead.
INSERT INTO idempotent_requests (project_id, method, request_id, request_hash)
VALUES (%(project_id)s, %(method)s, %(request_id)s, %(request_hash)s)
ON CONFLICT DO NOTHING
RETURNING 1;

-- name: idempotency_lookup
SELECT request_hash, response FROM idempotent_requests
WHERE project_id = %(project_id)s AND method = %(method)s AND request_id = %(request_id)s;

-- name: idempotency_record
UPDATE idempotent_requests SET response = %(response)s
WHERE project_id = %(project_id)s AND method = %(method)s AND request_id = %(request_id)s;

-- name: idempotency_expire
DELETE FROM idempotent_requests WHERE create_time < now() - make_interval(hours => %(hours)s);
