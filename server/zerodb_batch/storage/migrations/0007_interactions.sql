-- RLHF interactions: logged prompts, the responses to them and the feedback on those, keyed
-- (project_id, id) like every table. Ids are the server's own UUIDs. Optional texts that were
-- left empty are NULL.

CREATE TABLE interactions (
    project_id     text NOT NULL,
    id             uuid NOT NULL DEFAULT gen_random_uuid(),
    prompt         text NOT NULL,
    response       text NOT NULL,
    feedback       text CHECK (feedback IN ('positive', 'negative', 'mixed')),
    reward         double precision CHECK (reward BETWEEN -1 AND 1),
    model          text,
    session_id     text,
    agent_id       text,
    human_feedback text,
    tags           text[] NOT NULL DEFAULT '{}',
    context        text,
    metadata       jsonb NOT NULL DEFAULT '{}',
    create_time    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, id)
);

-- ListInteractions pages newest first with a (create_time, id) keyset; exports read oldest first.
CREATE INDEX interactions_recent ON interactions (project_id, create_time DESC, id DESC);
-- The common equality filters keep that order, so a filtered page reads only its own rows. The
-- indexes are partial: an interaction without the value costs no insert into them.
CREATE INDEX interactions_session ON interactions (project_id, session_id, create_time DESC, id DESC)
    WHERE session_id IS NOT NULL;
CREATE INDEX interactions_agent ON interactions (project_id, agent_id, create_time DESC, id DESC)
    WHERE agent_id IS NOT NULL;
CREATE INDEX interactions_model ON interactions (project_id, model, create_time DESC, id DESC)
    WHERE model IS NOT NULL;
CREATE INDEX interactions_feedback ON interactions (project_id, feedback, create_time DESC, id DESC)
    WHERE feedback IS NOT NULL;
-- Tag filters (the list query repeats the predicate, so the planner may use this index).
CREATE INDEX interactions_tags ON interactions USING gin (tags) WHERE tags <> '{}';
