-- Server secrets shared by every replica: the key that signs page tokens (HMAC), so that a token
-- one server issued is good on every other and a forged one is refused before it reaches a query.
CREATE TABLE server_secrets (
    name        text PRIMARY KEY,
    secret      bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);
