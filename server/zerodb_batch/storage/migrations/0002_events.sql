-- Events: the outbox of BatchPublishEvents and the full history behind each project's stream.
--
-- Each project numbers its events 1, 2, 3, ... without gaps (`seq`). Publishers take the next
-- numbers by updating the project's row in event_heads, and that row lock is held until commit,
-- so a project's events commit in `seq` order: a reader that has seen `seq` n never later finds
-- a new event below n. The stream entry id of an event is `<publish_time in ms>-<seq>`.

CREATE TABLE event_heads (
    project_id text PRIMARY KEY,
    last_seq   bigint NOT NULL,
    last_time  timestamptz NOT NULL  -- never decreases, so entry ids grow even if the clock steps back
);

-- One row per project with events. A relayer locks it while it appends the project's events to
-- Redis, so that one process at a time relays a project, in `seq` order. It is a table of its own
-- because publishers hold event_heads rows locked, and relaying must not block publishing.
-- Relaying is strictly in seq order, so one high-water mark says which events are in the stream:
-- pending are the seqs above relayed_seq (up to event_heads.last_seq). No per-event marks.
CREATE TABLE event_relays (
    project_id  text PRIMARY KEY,
    relayed_seq bigint NOT NULL DEFAULT 0  -- every event up to this seq has been appended
);

CREATE TABLE events (
    project_id   text NOT NULL,
    seq          bigint NOT NULL,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    topic        text NOT NULL,
    payload      jsonb NOT NULL,
    publish_time timestamptz NOT NULL,   -- millisecond precision, as in the stream entry id
    PRIMARY KEY (project_id, seq)
);
-- ListEvents by exact topic, and the mapping of a time to a position (publish_time grows with seq).
CREATE INDEX events_topic ON events (project_id, topic, seq);
CREATE INDEX events_time ON events (project_id, publish_time, seq);
