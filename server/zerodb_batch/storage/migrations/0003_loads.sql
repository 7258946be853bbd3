-- Streamed loads: the committed progress of each client-streamed load, keyed (project_id, load_id).
-- A chunk's records and this row's new last_offset are committed in one transaction, so after a
-- broken stream last_offset says exactly which chunks are in the database.

CREATE TABLE loads (
    project_id       text NOT NULL,
    load_id          text NOT NULL,
    kind             text NOT NULL,              -- memories, vectors, rows or interactions
    done             boolean NOT NULL DEFAULT false,  -- the last stream of the load closed cleanly
    last_offset      bigint NOT NULL,            -- highest committed chunk (the row exists from chunk 0)
    chunks_committed bigint NOT NULL DEFAULT 0,
    chunks_skipped   bigint NOT NULL DEFAULT 0,
    inserted         bigint NOT NULL DEFAULT 0,
    updated          bigint NOT NULL DEFAULT 0,
    failed           bigint NOT NULL DEFAULT 0,
    create_time      timestamptz NOT NULL DEFAULT now(),
    update_time      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, load_id)
);
