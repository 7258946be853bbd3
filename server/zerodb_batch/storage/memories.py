"""The memories table: set-based upsert, reads by id."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from zerodb_batch.domain.memory import MemoryColumns
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.queries import Q

# Column order of memory_get, shared with the api layer's row -> message conversion.
MemoryRow = tuple[
    str, str, str, float, list[str], dict[str, Any],
    str | None, str | None, str | None, datetime, datetime,
]


async def upsert(conn: Conn, project_id: str, rows: MemoryColumns) -> dict[str, bool]:
    """Write every row in one statement; returns id -> True if inserted, False if updated."""
    if not rows:
        return {}
    params = {
        "project_id": project_id,
        "ids": rows.ids,
        "contents": rows.contents,
        "memory_types": rows.memory_types,
        "importances": rows.importances,
        "tags": [json.dumps(t) for t in rows.tags],
        "metadata": rows.metadata,
        "session_ids": rows.session_ids,
        "agent_ids": rows.agent_ids,
        "entity_ids": rows.entity_ids,
    }
    cur = await conn.execute(Q["memory_upsert"], params)
    return {row[0]: row[1] for row in await cur.fetchall()}  # type: ignore[misc]


async def get(conn: Conn, project_id: str, ids: Sequence[str]) -> dict[str, MemoryRow]:
    cur = await conn.execute(Q["memory_get"], {"project_id": project_id, "ids": list(ids)})
    return {row[0]: row for row in await cur.fetchall()}  # type: ignore[misc]
