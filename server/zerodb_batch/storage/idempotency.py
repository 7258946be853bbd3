"""Idempotent batch writes: every write RPC runs through `write_once`, with its `request_id`.

A retry with the same `request_id` returns the first response without writing again; the same id
with a different request is refused. The claim row is inserted in the same transaction as the
write it guards, so either both commit or neither does, and a concurrent duplicate waits on the row
lock until the first one finishes. Claiming and reading the stored response is one statement, so
no expiry sweep can slip between.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message

from zerodb_batch.domain.fingerprint import fingerprint
from zerodb_batch.errors import RequestIdReused
from zerodb_batch.storage.pool import Conn, Database
from zerodb_batch.storage.queries import Q

R = TypeVar("R", bound=Message)


@dataclass(frozen=True)
class Written(Generic[R]):
    response: R
    replayed: bool  # the request ran before: `response` is the stored one, nothing was written


async def write_once(
    db: Database,
    request: Message,
    response_type: type[R],
    write: Callable[[Conn], Awaitable[R]],
    *,
    pipelined: bool = False,
    one_statement: bool = False,
) -> Written[R]:
    """Run `write` (which returns the response) in one transaction, unless the request's
    `request_id` already ran: then the first response, and nothing is written.

    The method a request_id belongs to is the request's message name: ids of different RPCs
    never collide. `pipelined` sends the statements in pipeline mode (see Database).
    `one_statement` says `write` runs a single statement: without a request_id to claim, that
    statement is its own transaction (autocommit), one round trip with no BEGIN or COMMIT.
    """
    if one_statement and not getattr(request, "request_id"):  # noqa: B009
        async with db.connection() as conn:
            return Written(await write(conn), replayed=False)
    begin = db.pipelined_transaction() if pipelined else db.transaction()
    async with begin as conn:
        if stored := await claim(conn, request, response_type):
            return Written(stored, replayed=True)
        response = await write(conn)
        await record(conn, request, response)
    return Written(response, replayed=False)


def _key(request: Message) -> dict[str, str]:
    return {
        "project_id": getattr(request, "project_id"),  # noqa: B009 - every write request has it
        "method": type(request).DESCRIPTOR.name.removesuffix("Request"),
        "request_id": getattr(request, "request_id"),  # noqa: B009
    }


async def claim(conn: Conn, request: Message, response_type: type[R]) -> R | None:
    """In the write's transaction: claim the request's request_id (if it has one); the stored
    response if the request already ran, None if the caller is to write."""
    key = _key(request)
    if not key["request_id"]:
        return None
    digest = fingerprint(request, "request_id")
    cur = await conn.execute(Q["idempotency_claim"], {**key, "request_hash": digest})
    row = await cur.fetchone()
    assert row is not None  # INSERT ... ON CONFLICT DO UPDATE returns its row either way
    claimed, stored_hash, stored = row
    if claimed:
        return None  # first time: the caller writes, then the response is recorded
    if bytes(stored_hash) != digest:  # type: ignore[call-overload]
        raise RequestIdReused(key["request_id"])
    return response_type.FromString(bytes(stored))  # type: ignore[call-overload]


async def record(conn: Conn, request: Message, response: Message) -> None:
    """In the write's transaction, after claim(): keep the response for retries."""
    key = _key(request)
    if key["request_id"]:
        await conn.execute(
            Q["idempotency_record"], {**key, "response": response.SerializeToString()}
        )


async def expire(conn: Conn, hours: int) -> int:
    cur = await conn.execute(Q["idempotency_expire"], {"hours": hours})
    return cur.rowcount
