"""Opaque page tokens for keyset pagination: the last row's (create_time, id), bound to a query.

A token is url-safe base64 of a small JSON object. It carries the position exactly (microseconds,
as PostgreSQL stores them) and a fingerprint of the query's filters, so a token replayed with other
filters is refused instead of silently paging through a different result (AIP-158).

Tokens are not signed, so a decoded one is checked like any other input before its id reaches
a query: a forged token is INVALID_ARGUMENT, never a database error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message

from zerodb_batch import limits
from zerodb_batch.errors import InvalidArgument, Violation

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# The tokens we issue stay under 2,200 characters (a 128-character id, JSON-escaped, in base64);
# the cap bounds what decoding a forged one can cost.
_MAX_TOKEN_CHARS = 4096

Position = tuple[datetime, str]  # (create_time, id) of the last row of a page


def query_fingerprint(request: Message, *page_fields: str) -> str:
    """A short hash of the request without its paging fields."""
    copy = type(request)()
    copy.CopyFrom(request)
    for name in page_fields:
        copy.ClearField(name)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:16]


def encode(position: Position, fingerprint: str) -> str:
    when, row_id = position
    body = {"t": (when - _EPOCH) // _MICROSECOND, "id": row_id, "q": fingerprint}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, fingerprint: str) -> Position:
    """The position in `token`; INVALID_ARGUMENT if it is not ours or belongs to another query."""
    try:
        if len(token) > _MAX_TOKEN_CHARS:
            raise ValueError("too long")
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        micros, row_id, query = body["t"], body["id"], body["q"]
        _check_fields(micros, row_id, query)
        when = _EPOCH + micros * _MICROSECOND
    except (binascii.Error, ValueError, TypeError, KeyError, OverflowError, RecursionError) as e:
        raise _invalid("is not a page token issued by this API", "INVALID_PAGE_TOKEN") from e
    if query != fingerprint:
        raise _invalid(
            "belongs to a list request with other filters; send the same filters as for the "
            "first page",
            "PAGE_TOKEN_MISMATCH",
        )
    return when, row_id


def _check_fields(micros: object, row_id: object, query: object) -> None:
    """Raise unless the fields are what `encode` writes (the id as a stored memory id can be)."""
    if type(micros) is not int or not isinstance(row_id, str) or not isinstance(query, str):
        raise TypeError("wrong field types")  # `type() is` also refuses true/false as a time
    if not 0 < len(row_id) <= limits.MAX_ID_CHARS or "\x00" in row_id:
        raise ValueError("not a memory id")
    row_id.encode()  # UnicodeEncodeError (a ValueError) for a lone surrogate such as \ud800


def _invalid(description: str, reason: str) -> InvalidArgument:
    return InvalidArgument(
        f"page_token {description}",
        violations=[Violation("page_token", description, reason)],
        reason=reason,
    )
