-- Consumer groups: their topic filter, fixed when the group is made, and what PostgreSQL must
-- deliver to them because the Redis stream no longer holds it.
--
-- A consumer of a group acknowledges the entries of topics outside its filter without delivering
-- them; a second consumer with another filter would ack away what the group wants. So the first
-- subscriber's filter is the group's, and a different one is refused.
CREATE TABLE event_groups (
    project_id  text NOT NULL,
    group_name  text NOT NULL,
    topics      text[] NOT NULL,      -- sorted and unique; empty means every topic
    -- Where the group started, as a stream entry id: a group that Redis lost is made again here,
    -- so it receives again (at least once) what it may not have acknowledged.
    start_ms    bigint NOT NULL,
    start_seq   bigint NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, group_name)
);

-- The group's pending list for events delivered from PostgreSQL (Redis's pending list can hold
-- only entries its stream still has): delivered to `consumer`, not yet acknowledged. Another
-- consumer takes a row over once it has been idle for its redelivery time, as XCLAIM does.
CREATE TABLE event_group_pending (
    project_id   text NOT NULL,
    group_name   text NOT NULL,
    seq          bigint NOT NULL,
    consumer     text NOT NULL,
    deliver_time timestamptz NOT NULL,
    deliveries   integer NOT NULL DEFAULT 1,
    PRIMARY KEY (project_id, group_name, seq)
);
CREATE INDEX event_group_pending_consumer ON event_group_pending (project_id, group_name, consumer);
