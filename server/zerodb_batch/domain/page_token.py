"""Opaque page tokens for keyset pagination: the last row's (create_time, id), bound to a query.

A token is url-safe base64 of a small JSON object. It carries the position exactly (microseconds,
as PostgreSQL stores them) and a fingerprint of the query's filters, so a token replayed with other
filters is refused instead of silently paging through a different result (AIP-158).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message

from zerodb_batch.errors import InvalidArgument, Violation

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

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
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        micros, row_id, query = body["t"], body["id"], body["q"]
        if not (isinstance(micros, int) and isinstance(row_id, str) and isinstance(query, str)):
            raise TypeError("wrong field types")
        when = _EPOCH + micros * _MICROSECOND
    except (binascii.Error, ValueError, TypeError, KeyError, OverflowError) as e:
        raise _invalid("is not a page token issued by this API", "INVALID_PAGE_TOKEN") from e
    if query != fingerprint:
        raise _invalid(
            "belongs to a list request with other filters; send the same filters as for the "
            "first page",
            "PAGE_TOKEN_MISMATCH",
        )
    return when, row_id


def _invalid(description: str, reason: str) -> InvalidArgument:
    return InvalidArgument(
        f"page_token {description}",
        violations=[Violation("page_token", description, reason)],
        reason=reason,
    )
