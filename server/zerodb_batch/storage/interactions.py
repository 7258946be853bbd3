"""The interactions table: batches and streamed chunks written by COPY, filtered pages, and
exports read through a server-side cursor.

Interactions are only ever inserted, under new ids, so no write here locks a row another could be
waiting for: batches and chunks need no lock order.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

from psycopg import sql
from psycopg.rows import class_row

from zerodb.v1 import rlhf_pb2
from zerodb_batch.domain.interaction import INTERACTION
from zerodb_batch.storage.copy_text import NULL, CopyLines, Send, copy_in, field, text_array
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.queries import Q

_EXPORT_BATCH_CHARS = 1 << 20  # of lines fetched (and sent) at a time
_EXPORT_MAX_ROWS = 1000  # fetched at a time, however short the lines


def _filtered(name: LiteralString) -> sql.Composed:
    """A query with the shared filters in place of its `{match}` (spliced, not formatted: the
    queries hold JSON braces of their own)."""
    before, marker, after = Q[name].partition("{match}")
    assert marker, f"{name} has no {{match}}"
    return sql.Composed([sql.SQL(before), sql.SQL(Q["interaction_match"]), sql.SQL(after)])


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


async def list_page(
    conn: Conn, project_id: str, filters: dict[str, object], limit: int
) -> list[InteractionRow]:
    """Up to `limit` interactions matching `filters`, newest first."""
    params = {**filters, "project_id": project_id, "limit": limit}
    async with conn.cursor(row_factory=class_row(InteractionRow)) as cur:
        # Unprepared, so every run is planned with its values and the unset filters fold away.
        await cur.execute(_LIST, params, prepare=False)
        return await cur.fetchall()


def export_query(pairs: bool) -> sql.Composed:
    """The statement of an export: preference pairs, or a line a row."""
    return _EXPORT_PAIRS if pairs else _EXPORT_ROWS


async def export(
    conn: Conn, project_id: str, format: str, pairs: bool, filters: dict[str, object]
) -> AsyncGenerator[list[str], None]:
    """The export's lines, about a MiB at a time, from a server-side cursor: only one batch is
    ever in memory. Must run in a transaction (the cursor lives as long as it), and be closed
    (contextlib.aclosing) before the connection is given back."""
    params = {**filters, "project_id": project_id, "format": format}
    rows = 10  # to learn how long the lines are
    async with conn.cursor(name="interaction_export") as cur:
        await cur.execute(export_query(pairs), params)
        while fetched := await cur.fetchmany(rows):
            lines: list[str] = [row[0] for row in fetched]  # type: ignore[misc]
            yield lines
            # As many rows next time as make about a batch at this batch's longest line.
            longest = max(map(len, lines))
            rows = max(1, min(_EXPORT_MAX_ROWS, _EXPORT_BATCH_CHARS // longest))


class InteractionCopyRows(CopyLines):
    """Valid interactions as lines for `interaction_copy`, whose ids the table assigns; or, given
    `new_ids` (an id for each request index), for `interaction_copy_ids`, which keeps them: then
    `index` and `ids` say which rows were written under which id."""

    __slots__ = ("_new_ids", "_prefix", "ids", "index")

    def __init__(self, project_id: str, new_ids: Sequence[str] | None = None) -> None:
        super().__init__()
        self._prefix = field(project_id) + "\t"  # the first column of every row
        self._new_ids = new_ids
        self.index: list[int] = []
        self.ids: list[str] = []

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
        prefix = self._prefix
        if self._new_ids is not None:
            new_id = self._new_ids[index]
            self.index.append(index)
            self.ids.append(new_id)
            prefix = f"{prefix}{new_id}\t"
        self.lines.append(
            f"{prefix}{prompt}\t{response}\t{feedback or NULL}\t"
            f"{NULL if reward is None else repr(reward)}\t{model or NULL}\t{session_id or NULL}\t"
            f"{agent_id or NULL}\t{human_feedback or NULL}\t{text_array(tags)}\t"
            f"{context or NULL}\t{metadata}\n"
        )


def copy_batch(conn: Conn) -> AbstractAsyncContextManager[Send]:
    """A COPY into the table of InteractionCopyRows made with `new_ids`, sent as they come."""
    return copy_in(conn, Q["interaction_copy_ids"])


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

    def order(self, chunk: rlhf_pb2.StreamCreateInteractionsRequest) -> None:
        return None  # every interaction gets a new id: no two writers share one

    async def write(
        self, conn: Conn, rows: InteractionCopyRows, started: Callable[[], object]
    ) -> tuple[int, int]:
        await rows.copy(conn, Q["interaction_copy"], started)
        return len(rows), 0
