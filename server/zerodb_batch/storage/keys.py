"""Projects and API keys. Keys look like `zdb_<random>`; only their SHA-256 is stored. A key holds
scopes (`read`, `write`, `admin`) and may expire."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from psycopg.rows import class_row

from zerodb_batch.limits import KEY_SCOPES
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.queries import Q

KEY_PREFIX = "zdb_"


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    prefix: str
    name: str
    create_time: datetime
    revoke_time: datetime | None
    scopes: list[str]
    expire_time: datetime | None


@dataclass(frozen=True)
class Grant:
    """What an active (unrevoked) key grants: its project and scopes, until `expire_time`."""

    project_id: str
    scopes: list[str]
    expire_time: datetime | None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expire_time is not None and self.expire_time <= (now or datetime.now(UTC))


async def create_project(conn: Conn, project_id: str | None = None, name: str = "") -> str:
    """Create a project (or keep an existing one with that id); returns its id."""
    project_id = project_id or str(uuid.uuid4())
    await conn.execute(Q["project_create"], {"project_id": project_id, "name": name})
    return project_id


async def count_projects(conn: Conn) -> int:
    cur = await conn.execute(Q["project_count"])
    row = await cur.fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


async def create_key(
    conn: Conn,
    project_id: str,
    name: str = "",
    scopes: tuple[str, ...] = KEY_SCOPES,
    expires_in: timedelta | None = None,
) -> tuple[str, str]:
    """Make a new key for the project; returns (key_id, key). The key is shown only this once."""
    if not scopes or not set(scopes) <= set(KEY_SCOPES):
        raise ValueError(f"scopes must be some of {', '.join(KEY_SCOPES)}, not {scopes!r}")
    await create_project(conn, project_id)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = str(uuid.uuid4())
    await conn.execute(
        Q["key_create"],
        {
            "project_id": project_id,
            "key_id": key_id,
            "key_hash": hash_key(key),
            "prefix": key[:12],
            "name": name,
            "scopes": sorted(set(scopes), key=KEY_SCOPES.index),
            "expire_time": datetime.now(UTC) + expires_in if expires_in is not None else None,
        },
    )
    return key_id, key


async def grant_of(conn: Conn, key: str) -> Grant | None:
    """What an unrevoked key grants (expired or not), or None for an unknown or revoked key."""
    async with conn.cursor(row_factory=class_row(Grant)) as cur:
        await cur.execute(Q["key_grant"], {"key_hash": hash_key(key)})
        return await cur.fetchone()


async def list_keys(conn: Conn, project_id: str) -> list[KeyInfo]:
    async with conn.cursor(row_factory=class_row(KeyInfo)) as cur:
        await cur.execute(Q["key_list"], {"project_id": project_id})
        return await cur.fetchall()


async def revoke_key(conn: Conn, key_id: str) -> bool:
    cur = await conn.execute(Q["key_revoke"], {"key_id": key_id})
    return await cur.fetchone() is not None
