-- name: interaction_copy
-- A chunk of a streamed load, in COPY's text format (see storage/copy_text.py); ids by default.
COPY interactions (project_id, prompt, response, feedback, reward, model, session_id, agent_id,
                   human_feedback, tags, context, metadata)
FROM STDIN;

-- name: interaction_copy_ids
-- A batch, whose ids the server made (the response names them).
COPY interactions (project_id, id, prompt, response, feedback, reward, model, session_id,
                   agent_id, human_feedback, tags, context, metadata)
FROM STDIN;

-- name: interaction_match
-- The filters of ListInteractions and ExportInteractions, put into their queries where they say
-- {match}. Unset filters are NULL and fold away when a statement is planned with its values (run
-- them unprepared). A tag filter repeats the tag index's predicate, so the planner may use it.
    (%(feedback)s::text IS NULL OR feedback = %(feedback)s::text)
AND (%(model)s::text IS NULL OR model = %(model)s::text)
AND (%(session_id)s::text IS NULL OR session_id = %(session_id)s::text)
AND (%(agent_id)s::text IS NULL OR agent_id = %(agent_id)s::text)
AND (%(tags)s::text[] IS NULL OR (tags && %(tags)s::text[] AND tags <> '{}'))
AND (%(reward_min)s::float8 IS NULL OR reward >= %(reward_min)s::float8)
AND (%(reward_max)s::float8 IS NULL OR reward <= %(reward_max)s::float8)
AND (%(start_time)s::timestamptz IS NULL OR create_time >= %(start_time)s::timestamptz)
AND (%(end_time)s::timestamptz IS NULL OR create_time < %(end_time)s::timestamptz)

-- name: interaction_list
-- Newest first with a (create_time, id) keyset, as memory_list. The ORDER BY names the table's
-- columns: a bare `id` would be the text output column, which no index is ordered by (every page
-- would then sort all the project's rows).
SELECT id::text, prompt, response, feedback, reward, model, session_id, agent_id,
       human_feedback, tags, context, metadata, create_time
FROM interactions
WHERE project_id = %(project_id)s AND {match}
  AND (%(after_time)s::timestamptz IS NULL
       OR (create_time, id) < (%(after_time)s::timestamptz, %(after_id)s::uuid))
ORDER BY interactions.create_time DESC, interactions.id DESC
LIMIT %(limit)s;

-- name: interaction_export_rows
-- ExportInteractions as `jsonl` (every field, by row_to_json) or `openai` (chat fine-tuning):
-- one line of compact JSON a row, made here, oldest first. Texts are quoted by to_json.
SELECT CASE WHEN %(format)s::text = 'openai' THEN
           '{"messages":['
           || CASE WHEN line.context IS NULL THEN ''
                   ELSE '{"role":"system","content":' || to_json(line.context)::text || '},' END
           || '{"role":"user","content":' || to_json(line.prompt)::text
           || '},{"role":"assistant","content":' || to_json(line.response)::text || '}]}'
       ELSE row_to_json(line)::text END
FROM (
    SELECT id, prompt, response, feedback, reward, model, session_id, agent_id, human_feedback,
           tags, context, metadata,
           to_char(create_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS create_time
    FROM interactions
    WHERE project_id = %(project_id)s AND {match}
      AND (%(format)s::text = 'jsonl' OR response <> '')
    ORDER BY interactions.create_time, interactions.id
) AS line

-- name: interaction_export_pairs
-- ExportInteractions as preference pairs, `trl` or `openai-preference` (the rule is in the
-- proto). The pairing runs on narrow rows (id, prompt hash, score): interactions with the same
-- prompt are ranked by score, and rank k of n meets rank n + 1 - k of its prompt. md5 only groups
-- the prompts; equal texts are checked on the pairs. Texts are read back by id, for the pairs
-- alone, so no sort ever carries them. Pairs come in no particular order.
WITH scored AS (
    SELECT id, create_time, md5(prompt)::uuid AS prompt_hash,
           COALESCE(reward, CASE feedback WHEN 'positive' THEN 1::float8
                                          WHEN 'mixed' THEN 0::float8
                                          WHEN 'negative' THEN -1::float8 END) AS score
    FROM interactions
    WHERE project_id = %(project_id)s AND {match}
      AND response <> '' AND (reward IS NOT NULL OR feedback IS NOT NULL)
), ranked AS (
    SELECT id, create_time, prompt_hash, score,
           row_number() OVER (PARTITION BY prompt_hash ORDER BY score DESC, create_time, id)
               AS rank,
           count(*) OVER (PARTITION BY prompt_hash) AS scored
    FROM scored
), paired AS (
    SELECT id AS chosen_id, score, rank, scored,
           nth_value(id, (scored + 1 - rank)::int) OVER whole AS rejected_id,
           nth_value(score, (scored + 1 - rank)::int) OVER whole AS rejected_score
    FROM ranked
    WINDOW whole AS (PARTITION BY prompt_hash ORDER BY score DESC, create_time, id
                     ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
SELECT CASE WHEN %(format)s::text = 'trl' THEN
           '{"prompt":' || to_json(c.prompt)::text || ',"chosen":' || to_json(c.response)::text
           || ',"rejected":' || to_json(r.response)::text || '}'
       ELSE
           '{"input":{"messages":[{"role":"user","content":' || to_json(c.prompt)::text
           || '}]},"preferred_output":[{"role":"assistant","content":'
           || to_json(c.response)::text
           || '}],"non_preferred_output":[{"role":"assistant","content":'
           || to_json(r.response)::text || '}]}' END
FROM paired AS p
JOIN interactions AS c ON c.project_id = %(project_id)s AND c.id = p.chosen_id
JOIN interactions AS r ON r.project_id = %(project_id)s AND r.id = p.rejected_id
WHERE 2 * p.rank <= p.scored AND p.score > p.rejected_score AND c.prompt = r.prompt
