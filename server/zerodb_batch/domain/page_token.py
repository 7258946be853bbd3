"""Keyset page tokens: one codec for every List RPC, signed so that a token cannot be forged.

A token carries the position of the last row of a page (the values of the list's sort key) and a
fingerprint of the request's filters, signed with HMAC-SHA256 under a key that the server keeps in
the database (so every replica accepts every other's tokens). A token that was not issued by us
(altered, truncated, made up) is INVALID_ARGUMENT `PAGE_TOKEN_INVALID` before any value of it
reaches a query; a genuine token sent with other filters than the request that made it is
`PAGE_TOKEN_MISMATCH` (AIP-158: a token is only good for the same query).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from zerodb_batch import limits
from zerodb_batch.domain.fingerprint import fingerprint
from zerodb_batch.domain.validate import Checker
from zerodb_batch.errors import InvalidArgument, Violation

Position = tuple[int | str, ...]  # the sort key values of a page's last row
Row = TypeVar("Row")

_PAGE_FIELDS = ("page_size", "page_token")
_TAG_BYTES = 16  # of the HMAC: forging one takes ~2**128 tries
_MAX_TOKEN_CHARS = 4096  # what decoding a made-up token may cost


def page_size(checker: Checker, requested: int, default: int) -> int:
    """The page size to use: `default` for 0; over the maximum, the maximum (AIP-158)."""
    if requested < 0:
        checker.add("page_size", f"must be 0 (meaning {default}) or more", "OUT_OF_RANGE")
    return min(requested or default, limits.MAX_PAGE_SIZE)


class PageTokens:
    """Issues and checks the tokens of one server (its key comes from the database)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def encode(self, request: Message, position: Position) -> str:
        """The token that continues `request` after `position`."""
        query = fingerprint(request, *_PAGE_FIELDS).hex()[:32]
        body = json.dumps([query, *position], separators=(",", ":")).encode()
        return f"{_b64(body)}.{_b64(self._sign(body))}"

    def page(
        self, request: Message, rows: Sequence[Row], size: int, position: Callable[[Row], Position]
    ) -> tuple[Sequence[Row], str]:
        """The first `size` of `rows`, read with one row more than the page (that row says another
        page follows), and the token that continues after them: empty on the last page."""
        shown = rows[:size]
        return shown, self.encode(request, position(shown[-1])) if len(rows) > size else ""

    def decode(self, request: Message, shape: Sequence[type]) -> Position | None:
        """The position in `request.page_token` (None when it has none), whose values have the
        types in `shape`; INVALID_ARGUMENT for a token we did not issue or of another query."""
        token: str = getattr(request, "page_token")  # noqa: B009 - every List request has it
        if not token:
            return None
        body = self._verified(token)
        try:
            query, *position = json.loads(body)
        except (ValueError, RecursionError):
            raise _invalid() from None
        if len(position) != len(shape) or not all(
            type(v) is t for v, t in zip(position, shape, strict=True)
        ):
            raise _invalid()
        if query != fingerprint(request, *_PAGE_FIELDS).hex()[:32]:
            raise InvalidArgument(
                "page_token belongs to a list request with other filters; send the same filters "
                "as for the first page",
                violations=[
                    Violation("page_token", "made for other filters", "PAGE_TOKEN_MISMATCH")
                ],
                reason="PAGE_TOKEN_MISMATCH",
            )
        return tuple(position)

    def _verified(self, token: str) -> bytes:
        body_text, _, tag_text = token.partition(".")
        try:
            if len(token) > _MAX_TOKEN_CHARS:
                raise ValueError("too long")
            body, tag = _unb64(body_text), _unb64(tag_text)
        except (binascii.Error, ValueError):
            raise _invalid() from None
        if not hmac.compare_digest(tag, self._sign(body)):
            raise _invalid()
        return body

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_TAG_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _invalid() -> InvalidArgument:
    return InvalidArgument(
        "page_token is not a next_page_token issued by this API",
        violations=[Violation("page_token", "not issued by this API", "PAGE_TOKEN_INVALID")],
        reason="PAGE_TOKEN_INVALID",
    )
