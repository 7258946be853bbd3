"""The interactions table: set-based batch inserts, COPY loads, filtered pages and exports read
through a server-side cursor.

Interactions are only ever inserted, under new ids, so no write here locks a row another could be
waiting for: batches and chunks need no lock order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

from psycopg import sql
from psycopg.rows import class_row

from zerodb.v1 import rlhf_pb2
from zerodb_batch.domain.interaction import INTERACTION, InteractionColumns
from zerodb_batch.storage.copy_text import NULL, CopyLines, field, text_array
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.queries import Q
from zerodb_batch.storage.unnest import flat_tags

EXPORT_BATCH_BYTES = 1 << 20  # of lines fetched (and sent) at a time
_EXPORT_MAX_ROWS = 1000  # fetched at a time, however short the lines


def _filtered(name: LiteralString) -> sql.Composed:
    """A query with the shared filters in place of its `{match}`."""
    return sql.SQL(Q[name]).format(match=sql.SQL(Q["interaction_match"]))


_LIST = _filtered("interaction_list")
_EXPORT_ROWS = _filtered("interaction_export_rows")
_EXPORT_PAIRS = _filtered("interaction_export_pairs")


@dataclass(frozen=True)
class InteractionRow:
    """An interaction as interaction_list returns it."""

    id: str
    prompt: str
    response: str
    feedback: str | None
    reward: float | None
    model: str | None
    session_id: str | None
    agent_id: str | None
    human_feedback: str | None
    tags: list[str]
    context: str | None
    metadata: dict[str, Any]
    create_time: datetime


async def insert(conn: Conn, project_id: str, rows: InteractionColumns) -> None:
    """Insert every row in one statement (in pipeline mode, without waiting for the result)."""
    if not rows:
        return
    params = {
        "project_id": project_id,
        "ids": rows.ids,
        "prompts": rows.prompts,
        "responses": rows.responses,
        "feedback": rows.feedback,
        "rewards": rows.rewards,
        "models": rows.models,
        "session_ids": rows.session_ids,
        "agent_ids": rows.agent_ids,
        "human_feedback": rows.human_feedback,
        **flat_tags(rows.tags),
        "contexts": rows.contexts,
        "metadata": rows.metadata,
    }
    await conn.execute(Q["interaction_insert"], params)


async def list_page(
    conn: Conn, project_id: str, filters: dict[str, object], limit: int
) -> list[InteractionRow]:
    """Up to `limit` interactions matching `filters`, newest first."""
    params = {**filters, "project_id": project_id, "limit": limit}
    async with conn.cursor(row_factory=class_row(InteractionRow)) as cur:
        # Unprepared, so every run is planned with its values and the unset filters fold away.
        await cur.execute(_LIST, params, prepare=False)
        return await cur.fetchall()


async def export(
    conn: Conn, project_id: str, format: str, pairs: bool, filters: dict[str, object]
) -> AsyncIterator[list[str]]:
    """The export's lines, about EXPORT_BATCH_BYTES at a time, from a server-side cursor: only one
    batch is ever in memory. Must run in a transaction (the cursor lives as long as it)."""
    params = {**filters, "project_id": project_id, "format": format}
    rows = 10  # to learn how long the lines are
    async with conn.cursor(name="interaction_export") as cur:
        await cur.execute(_EXPORT_PAIRS if pairs else _EXPORT_ROWS, params)
        while fetched := await cur.fetchmany(rows):
            lines: list[str] = [row[0] for row in fetched]  # type: ignore[misc]
            yield lines
            # As many rows next time as make about a batch at this batch's longest line.
            longest = max(map(len, lines))
            rows = max(1, min(_EXPORT_MAX_ROWS, EXPORT_BATCH_BYTES // longest))


class InteractionCopyRows(CopyLines):
    """Valid interactions as lines for `interaction_copy` (the table assigns the ids)."""

    __slots__ = ("_prefix",)

    def __init__(self, project_id: str) -> None:
        super().__init__()
        self._prefix = field(project_id) + "\t"  # the first column of every row

    def add(
        self, index: int, prompt: str, response: str, feedback: str | None, reward: float | None,
        model: str, session_id: str, agent_id: str, human_feedback: str, tags: list[str],
        context: str, metadata: str,
    ) -> None:  # fmt: skip
        # Prompts and responses hold newlines more often than not: each text is escaped on its
        # own (feedback is one of a fixed set; metadata, JSON text, can only hold a backslash).
        prompt, response, context = field(prompt), field(response), field(context)
        if "\\" in metadata:
            metadata = field(metadata)
        if model or session_id or agent_id or human_feedback:
            model, session_id, agent_id = field(model), field(session_id), field(agent_id)
            human_feedback = field(human_feedback)
        self.lines.append(
            f"{self._prefix}{prompt}\t{response}\t{feedback or NULL}\t"
            f"{NULL if reward is None else repr(reward)}\t{model or NULL}\t{session_id or NULL}\t"
            f"{agent_id or NULL}\t{human_feedback or NULL}\t{text_array(tags)}\t"
            f"{context or NULL}\t{metadata}\n"
        )


class InteractionLoadWriter:
    """StreamCreateInteractions' writer for the load engine: each chunk by COPY into the table."""

    kind = "interactions"
    rules = INTERACTION
    records_field = "interactions"
    response_type = rlhf_pb2.StreamCreateInteractionsResponse

    def check(self, chunk: rlhf_pb2.StreamCreateInteractionsRequest) -> None:
        pass  # an interaction chunk has no fields beyond the engine's

    def rows(self, chunk: rlhf_pb2.StreamCreateInteractionsRequest) -> InteractionCopyRows:
        return InteractionCopyRows(chunk.project_id)

    async def write(
        self, conn: Conn, rows: InteractionCopyRows, started: Callable[[], object]
    ) -> tuple[int, int]:
        await rows.copy(conn, Q["interaction_copy"], started)
        return len(rows), 0
