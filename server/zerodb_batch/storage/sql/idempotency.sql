-- name: idempotency_claim
-- Claim and read in one statement. The first caller inserts the row (xmax = 0: claimed). A
-- duplicate's no-op update takes the row lock, so it waits until the first transaction ends, then
-- reads the committed row and its response. A row deleted by the expiry sweep meanwhile is no
-- conflict: the insert simply claims it again. (DO NOTHING plus a second SELECT left a gap where
-- the sweep could delete the row in between.)
INSERT INTO idempotent_requests AS r (project_id, method, request_id, request_hash)
VALUES (%(project_id)s, %(method)s, %(request_id)s, %(request_hash)s)
ON CONFLICT (project_id, method, request_id) DO UPDATE SET request_id = EXCLUDED.request_id
RETURNING (r.xmax = 0) AS claimed, r.request_hash, r.response;

-- name: idempotency_record
UPDATE idempotent_requests SET response = %(response)s
WHERE project_id = %(project_id)s AND method = %(method)s AND request_id = %(request_id)s;

-- name: idempotency_expire
DELETE FROM idempotent_requests WHERE create_time < now() - make_interval(hours => %(hours)s);
