"""Secrets the replicas of one deployment share, kept in the database (see 0004_secrets.sql)."""

from __future__ import annotations

import secrets

from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.queries import Q

PAGE_TOKENS = "page_tokens"


async def shared_secret(conn: Conn, name: str) -> bytes:
    """The secret called `name`, made (32 random bytes) by whichever server asks first."""
    params = {"name": name, "secret": secrets.token_bytes(32)}
    await conn.execute(Q["secret_ensure"], params)
    cur = await conn.execute(Q["secret_get"], {"name": name})
    row = await cur.fetchone()
    assert row is not None  # ensured just above
    secret = row[0]
    assert isinstance(secret, bytes)
    return secret
