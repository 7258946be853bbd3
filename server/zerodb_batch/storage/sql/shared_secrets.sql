-- name: secret_ensure
-- The first server to start stores its fresh secret; every later one (and every replica racing
-- it) keeps that one.
INSERT INTO server_secrets (name, secret) VALUES (%(name)s, %(secret)s)
ON CONFLICT (name) DO NOTHING;

-- name: secret_get
SELECT secret FROM server_secrets WHERE name = %(name)s;
