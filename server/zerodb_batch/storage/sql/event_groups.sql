-- name: event_group_register
-- The first subscriber of a group fixes its filter and start; later ones read them back. (A no-op
-- update rather than DO NOTHING: it returns the row that a concurrent first subscriber made.)
INSERT INTO event_groups AS g (project_id, group_name, topics, start_ms, start_seq)
VALUES (%(project_id)s, %(group)s, %(topics)s, %(start_ms)s, %(start_seq)s)
ON CONFLICT (project_id, group_name) DO UPDATE SET topics = g.topics
RETURNING topics, start_ms, start_seq;

-- name: event_group_advance
-- The group has acknowledged everything up to this position: a group Redis loses is made again
-- here rather than at its first start (never moved back).
UPDATE event_groups SET start_ms = %(start_ms)s, start_seq = %(start_seq)s
WHERE project_id = %(project_id)s AND group_name = %(group)s AND start_seq < %(start_seq)s;

-- name: event_group_track
-- Events about to go out from PostgreSQL are pending to this consumer before they are sent: if
-- it dies without acknowledging them, another takes them over after its idle time.
INSERT INTO event_group_pending AS p (project_id, group_name, seq, consumer, deliver_time)
SELECT %(project_id)s, %(group)s, s, %(consumer)s, clock_timestamp()
FROM unnest(%(seqs)s::bigint[]) AS s
ON CONFLICT (project_id, group_name, seq) DO UPDATE
    SET consumer = EXCLUDED.consumer, deliver_time = EXCLUDED.deliver_time,
        deliveries = p.deliveries + 1;

-- name: event_group_claim
-- XCLAIM for the events PostgreSQL delivered: rows other consumers have held longer than
-- `idle_ms` move to this one (SKIP LOCKED: two claimers never take the same row), or this
-- consumer's own rows when `own` (a consumer coming back gets what it held, as from its
-- Redis pending list). Returns the events, in order.
WITH taken AS (
    UPDATE event_group_pending p
    SET consumer = %(consumer)s, deliver_time = clock_timestamp(), deliveries = p.deliveries + 1
    WHERE (p.project_id, p.group_name, p.seq) IN (
        SELECT project_id, group_name, seq FROM event_group_pending
        WHERE project_id = %(project_id)s AND group_name = %(group)s
          AND seq > %(after)s
          AND CASE WHEN %(own)s THEN consumer = %(consumer)s
                   ELSE consumer <> %(consumer)s
                        AND deliver_time < clock_timestamp() - %(idle_ms)s * interval '1 ms'
              END
        ORDER BY seq
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED)
    RETURNING p.seq
)
SELECT e.seq, e.id::text AS id, e.topic, e.payload::text AS payload, e.publish_time
FROM events e JOIN taken t ON e.project_id = %(project_id)s AND e.seq = t.seq
ORDER BY e.seq;

-- name: event_group_count
SELECT count(*) FROM event_group_pending
WHERE project_id = %(project_id)s AND group_name = %(group)s AND consumer = %(consumer)s;

-- name: event_group_ack
DELETE FROM event_group_pending
WHERE project_id = %(project_id)s AND group_name = %(group)s AND seq = ANY(%(seqs)s::bigint[]);
