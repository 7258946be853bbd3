-- name: load_get
SELECT load_id, kind, done, last_offset, chunks_committed, chunks_skipped,
       inserted, updated, failed, create_time, update_time
FROM loads
WHERE project_id = %(project_id)s AND load_id = %(load_id)s;

-- name: load_advance
-- Record chunk `offset` as committed. The first chunk creates the row; later ones apply only if
-- the row is still at offset - 1 and of the same kind. No row back means another stream of the
-- same load moved it meanwhile: the caller rolls back and looks again. A chunk marked final
-- makes the load done with it; any other makes it running again.
--
-- It also lets the chunk's transaction commit without waiting for its WAL flush (set_config with
-- is_local = true is SET LOCAL; doing it here saves a round trip per chunk). A crash can lose
-- only the latest chunks together with the progress row that counts them, so GetLoad and the
-- data never disagree and a resumed load resends exactly what was lost. What says a load is
-- done commits synchronously, flushing every earlier chunk first: the final chunk (whose call
-- may end without another statement) and the stream's closing update (load_finish).
WITH relaxed AS MATERIALIZED (
    SELECT set_config('synchronous_commit', CASE WHEN %(final)s THEN 'on' ELSE 'off' END, true))
INSERT INTO loads AS l (
    project_id, load_id, kind, done, last_offset, chunks_committed, chunks_skipped,
    inserted, updated, failed)
SELECT %(project_id)s, %(load_id)s, %(kind)s, %(final)s, %(offset)s, 1, %(skipped)s,
       %(inserted)s, %(updated)s, %(failed)s
FROM relaxed
ON CONFLICT (project_id, load_id) DO UPDATE SET
    done = EXCLUDED.done,
    last_offset = EXCLUDED.last_offset,
    chunks_committed = l.chunks_committed + 1,
    chunks_skipped = l.chunks_skipped + EXCLUDED.chunks_skipped,
    inserted = l.inserted + EXCLUDED.inserted,
    updated = l.updated + EXCLUDED.updated,
    failed = l.failed + EXCLUDED.failed,
    update_time = now()
WHERE l.last_offset = EXCLUDED.last_offset - 1 AND l.kind = EXCLUDED.kind
RETURNING load_id, kind, done, last_offset, chunks_committed, chunks_skipped,
          inserted, updated, failed, create_time, update_time;

-- name: load_finish
-- A stream closed cleanly. The load is done if the last chunk this stream sent (committed, or
-- skipped as already in) is the load's last: a stream that closes behind another stream of the
-- same load leaves the state as it is, for the stream ahead to settle when it closes. Any later
-- commit (load_advance) makes the load running again.
UPDATE loads SET
    done = done OR last_offset = %(through)s,
    chunks_skipped = chunks_skipped + %(skipped)s,
    update_time = now()
WHERE project_id = %(project_id)s AND load_id = %(load_id)s
RETURNING load_id, kind, done, last_offset, chunks_committed, chunks_skipped,
          inserted, updated, failed, create_time, update_time;

-- name: load_add_skipped
-- Duplicate chunks counted by a stream that ended in an error before its next commit.
UPDATE loads SET chunks_skipped = chunks_skipped + %(skipped)s, update_time = now()
WHERE project_id = %(project_id)s AND load_id = %(load_id)s;
