"""Idempotent writes: a `request_id` retry returns the first response without writing again.

The claim row is inserted in the same transaction as the write it guards, so either both commit
or neither does, and a concurrent duplicate waits on the row lock until the first one finishes.
Claiming and reading the stored response is one statement, so no expiry sweep can slip between.
"""

from __future__ import annotations

import hashlib
from typing import TypeVar

from google.protobuf.message import Message

from zerodb_batch.errors import RequestIdReused
from zerodb_batch.storage.pool import Conn
from zerodb_batch.storage.queries import Q

R = TypeVar("R", bound=Message)


def fingerprint(request: Message) -> bytes:
    """Hash of the request without its request_id (deterministic serialization)."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()


class Idempotency:
    """One claimed request_id inside a write transaction."""

    def __init__(self, conn: Conn, project_id: str, method: str, request: Message) -> None:
        self._conn = conn
        self._key = {
            "project_id": project_id,
            "method": method,
            "request_id": getattr(request, "request_id", ""),
        }
        self._request = request

    async def replay(self, response_type: type[R]) -> R | None:
        """Claim the request_id; returns the stored response if the request already ran."""
        if not self._key["request_id"]:
            return None
        digest = fingerprint(self._request)
        cur = await self._conn.execute(
            Q["idempotency_claim"], {**self._key, "request_hash": digest}
        )
        row = await cur.fetchone()
        assert row is not None  # INSERT ... ON CONFLICT DO UPDATE returns its row either way
        claimed, stored_hash, stored = row
        if claimed:
            return None  # first time: the caller writes, then calls record()
        if bytes(stored_hash) != digest:  # type: ignore[call-overload]
            raise RequestIdReused(str(self._key["request_id"]))
        return response_type.FromString(bytes(stored))  # type: ignore[call-overload]

    async def record(self, response: Message) -> None:
        if self._key["request_id"]:
            await self._conn.execute(
                Q["idempotency_record"], {**self._key, "response": response.SerializeToString()}
            )


async def expire(conn: Conn, hours: int) -> int:
    cur = await conn.execute(Q["idempotency_expire"], {"hours": hours})
    return cur.rowcount
