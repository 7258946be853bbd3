-- What a key may do (`read`, `write`, `admin`) and until when. Keys made before scopes existed
-- keep every scope they had in effect; a key with no expire_time never expires.
ALTER TABLE api_keys
    ADD COLUMN scopes text[] NOT NULL DEFAULT '{read,write,admin}',
    ADD COLUMN expire_time timestamptz,
    ADD CONSTRAINT api_keys_scopes_known
        CHECK (scopes <@ '{read,write,admin}'::text[] AND cardinality(scopes) > 0);
