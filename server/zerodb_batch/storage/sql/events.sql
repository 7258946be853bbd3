-- name: event_insert
-- One statement for the whole batch. The project's head row hands out the next `count` numbers
-- and stays locked until commit, so the project's events commit in seq order. Every event of
-- the batch shares one publish time, truncated to the millisecond of its stream entry id.
WITH head AS (
    INSERT INTO event_heads AS h (project_id, last_seq, last_time)
    VALUES (%(project_id)s, %(count)s::bigint, date_trunc('milliseconds', clock_timestamp()))
    ON CONFLICT (project_id) DO UPDATE
        SET last_seq = h.last_seq + EXCLUDED.last_seq,
            last_time = greatest(h.last_time, EXCLUDED.last_time)
    RETURNING h.last_seq - %(count)s::bigint AS base, h.last_time
)
INSERT INTO events (project_id, seq, topic, payload, publish_time)
SELECT %(project_id)s, head.base + u.n, u.topic, u.payload, head.last_time
FROM head, unnest(%(topics)b::text[], %(payloads)b::jsonb[]) WITH ORDINALITY AS u(topic, payload, n)
RETURNING seq, id::text AS id, publish_time;

-- name: event_relay_settings
-- For the relay transaction only: how long a publisher waits for another relayer of its project;
-- a relayer stuck between statements (on Redis I/O) loses its session, and with it the lock,
-- rather than stalling every publisher of the project; and no WAL flush wait at commit. A relay
-- mark lost in a crash only means the events are appended again, which the stream refuses as
-- duplicate ids.
SELECT set_config('lock_timeout', %(lock_timeout)s, true),
       set_config('idle_in_transaction_session_timeout', %(idle_timeout)s, true),
       set_config('synchronous_commit', 'off', true);

-- name: event_relay_row
-- Made on first use. An existing row, even one locked by a relayer, is left alone without waiting.
INSERT INTO event_relays (project_id) VALUES (%(project_id)s) ON CONFLICT DO NOTHING;

-- name: event_relay_lock
SELECT relayed_seq FROM event_relays WHERE project_id = %(project_id)s FOR UPDATE;

-- name: event_relay_try_lock
-- Replicas skip a project that another process is relaying instead of queueing behind it.
SELECT relayed_seq FROM event_relays WHERE project_id = %(project_id)s FOR UPDATE SKIP LOCKED;

-- name: event_claim
-- Under the project's relay lock: its oldest pending events (after the mark), in order.
SELECT seq, id::text AS id, topic, payload::text AS payload, publish_time
FROM events
WHERE project_id = %(project_id)s AND seq > %(after)s AND seq <= %(up_to)s
ORDER BY seq
LIMIT %(limit)s;

-- name: event_mark_own
-- A publisher's fast path, under the relay lock: its own events, unless older ones are still
-- pending (those must reach the stream first). The mark commits only after the XADDs succeed.
UPDATE event_relays SET relayed_seq = %(last)s
WHERE project_id = %(project_id)s AND relayed_seq BETWEEN %(first)s - 1 AND %(last)s - 1;

-- name: event_mark_relayed
UPDATE event_relays SET relayed_seq = %(last)s
WHERE project_id = %(project_id)s AND relayed_seq < %(last)s;

-- name: event_pending_projects
-- One row per project (event_heads against event_relays), however many events are pending.
SELECT h.project_id FROM event_heads h LEFT JOIN event_relays r USING (project_id)
WHERE h.last_seq > coalesce(r.relayed_seq, 0)
LIMIT %(limit)s;

-- name: event_relayed_projects
-- Projects with events in their stream, a page at a time: checked after Redis restarted.
SELECT project_id FROM event_relays
WHERE relayed_seq > 0 AND project_id > %(after)s
ORDER BY project_id
LIMIT %(limit)s;

-- name: event_notify
SELECT pg_notify('zerodb_events', %(project_id)s);

-- name: event_head
SELECT last_seq, last_time FROM event_heads WHERE project_id = %(project_id)s;

-- name: event_first_at
-- The first event published at or after a time (publish_time grows with seq).
SELECT seq FROM events
WHERE project_id = %(project_id)s AND publish_time >= %(time)s
ORDER BY publish_time, seq
LIMIT 1;

-- name: event_range
-- Events between two positions, for a subscriber whose position the stream no longer holds.
SELECT seq, id::text AS id, topic, payload::text AS payload, publish_time
FROM events
WHERE project_id = %(project_id)s AND seq > %(after)s AND seq < %(before)s
ORDER BY seq
LIMIT %(limit)s;

-- name: event_list
-- A ListEvents page: every topic, or the topics starting with `prefix`. Time bounds become seq
-- bounds first (publish_time grows with seq), so the scan starts and stops on the primary key.
SELECT e.seq, e.id::text AS id, e.topic, e.payload::text AS payload, e.publish_time
FROM events e
WHERE e.project_id = %(project_id)s
  AND e.seq > %(after)s
  AND e.seq >= coalesce((SELECT seq FROM events WHERE project_id = %(project_id)s
                         AND publish_time >= %(start_time)s
                         ORDER BY publish_time, seq LIMIT 1), 9223372036854775807)
  AND e.seq < coalesce((SELECT seq FROM events WHERE project_id = %(project_id)s
                        AND publish_time >= %(end_time)s
                        ORDER BY publish_time, seq LIMIT 1), 9223372036854775807)
  AND starts_with(e.topic, %(prefix)s)
ORDER BY e.seq
LIMIT %(limit)s;

-- name: event_list_topic
-- A ListEvents page of one exact topic, read in order from the topic index.
SELECT e.seq, e.id::text AS id, e.topic, e.payload::text AS payload, e.publish_time
FROM events e
WHERE e.project_id = %(project_id)s
  AND e.topic = %(topic)s
  AND e.seq > %(after)s
  AND e.seq >= coalesce((SELECT seq FROM events WHERE project_id = %(project_id)s
                         AND publish_time >= %(start_time)s
                         ORDER BY publish_time, seq LIMIT 1), 9223372036854775807)
  AND e.seq < coalesce((SELECT seq FROM events WHERE project_id = %(project_id)s
                        AND publish_time >= %(end_time)s
                        ORDER BY publish_time, seq LIMIT 1), 9223372036854775807)
ORDER BY e.seq
LIMIT %(limit)s;

-- name: event_listen
LISTEN zerodb_events;

-- name: event_by_seqs
-- Events a consumer group holds as pending ids whose stream entries were trimmed away.
SELECT seq, id::text AS id, topic, payload::text AS payload, publish_time
FROM events
WHERE project_id = %(project_id)s AND seq = ANY(%(seqs)s::bigint[])
ORDER BY seq;

-- name: event_backlog_lock_timeout
-- For event_backlog's transaction: a sample of the metrics gives up after a second behind a lock
-- (a table locked by maintenance) rather than holding a pooled connection until it is released.
SET LOCAL lock_timeout = '1s';

-- name: event_backlog
-- How far the relays are behind, for the metrics: events committed and not yet in their stream,
-- and the age of the oldest. Reads one row per project with events (event_heads against
-- event_relays, as event_pending_projects does) and one primary-key row per project behind.
SELECT coalesce(sum(h.last_seq - coalesce(r.relayed_seq, 0)), 0)::bigint AS waiting,
       greatest(coalesce(extract(epoch FROM clock_timestamp() - min(e.publish_time)), 0), 0)
           ::float8 AS oldest_age
FROM event_heads h
LEFT JOIN event_relays r USING (project_id)
LEFT JOIN events e ON e.project_id = h.project_id AND e.seq = coalesce(r.relayed_seq, 0) + 1
WHERE h.last_seq > coalesce(r.relayed_seq, 0);
