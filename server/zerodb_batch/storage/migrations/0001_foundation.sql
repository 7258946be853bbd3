-- Foundation: projects, hashed API keys, idempotent requests, memories.
-- Every table is keyed by project_id first, so the schema can shard by project later.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE projects (
    project_id  text PRIMARY KEY,
    name        text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    project_id  text NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    key_id      text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE,      -- sha256 of the whole key; the key itself is never stored
    prefix      text NOT NULL,              -- first characters, to recognise a key in listings
    name        text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    revoke_time timestamptz,
    PRIMARY KEY (project_id, key_id)
);

-- One row per (project, method, request_id): the fingerprint of the first request and its response.
CREATE TABLE idempotent_requests (
    project_id   text NOT NULL,
    method       text NOT NULL,
    request_id   text NOT NULL,
    request_hash bytea NOT NULL,
    response     bytea,
    create_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, method, request_id)
);
CREATE INDEX idempotent_requests_expiry ON idempotent_requests (create_time);

CREATE TABLE memories (
    project_id  text NOT NULL,
    id          text NOT NULL,
    content     text NOT NULL,
    memory_type text NOT NULL CHECK (memory_type IN ('working', 'episodic', 'semantic')),
    importance  double precision NOT NULL CHECK (importance BETWEEN 0 AND 1),
    tags        text[] NOT NULL DEFAULT '{}',
    metadata    jsonb NOT NULL DEFAULT '{}',
    session_id  text,
    agent_id    text,
    entity_id   text,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, id)
);
-- ListMemories pages newest first with a (create_time, id) keyset.
CREATE INDEX memories_recent ON memories (project_id, create_time DESC, id DESC);
CREATE INDEX memories_tags ON memories USING gin (tags);
