"""Page tokens: exact positions, bound to their query, refused when forged or mangled."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from zerodb.v1 import memory_pb2
from zerodb_batch.domain import page_token
from zerodb_batch.errors import InvalidArgument


def test_round_trip_keeps_microseconds() -> None:
    when = datetime(2026, 11, 29, 10, 4, 23, 123457, tzinfo=UTC)
    token = page_token.encode((when, "mem-9"), "q1")
    assert page_token.decode(token, "q1") == (when, "mem-9")
    assert "=" not in token and "/" not in token and "+" not in token


def test_fingerprint_ignores_paging_fields_only() -> None:
    a = memory_pb2.ListMemoriesRequest(project_id="p", tags=["x"], page_size=5, page_token="t")
    b = memory_pb2.ListMemoriesRequest(project_id="p", tags=["x"])
    c = memory_pb2.ListMemoriesRequest(project_id="p", tags=["y"])
    fields = ("page_size", "page_token")
    assert page_token.query_fingerprint(a, *fields) == page_token.query_fingerprint(b, *fields)
    assert page_token.query_fingerprint(b, *fields) != page_token.query_fingerprint(c, *fields)


@pytest.mark.parametrize("token", ["", "!!!", "bnVsbA", "W10", "eyJ0IjoxfQ"])
def test_mangled_tokens_refused(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        page_token.decode(token, "q1")
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


def test_token_of_another_query_refused() -> None:
    token = page_token.encode((datetime.now(UTC), "m"), "q1")
    with pytest.raises(InvalidArgument) as caught:
        page_token.decode(token, "q2")
    assert caught.value.reason == "PAGE_TOKEN_MISMATCH"


def forge(body: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        forge({"t": 0, "id": "a\x00", "q": "q1"}),
        forge({"t": 0, "id": "\udc00", "q": "q1"}),
        forge({"t": 0, "id": "", "q": "q1"}),
        forge({"t": 0, "id": "i" * 129, "q": "q1"}),
        forge({"t": False, "id": "m", "q": "q1"}),
        forge({"t": 1.5, "id": "m", "q": "q1"}),
        forge({"t": 10**20, "id": "m", "q": "q1"}),  # past year 9999
        forge({"t": 0, "id": "m", "q": None}),
        base64.urlsafe_b64encode(b"[" * 3000).decode(),  # deep enough for RecursionError
        "A" * 5000,
    ],
)
def test_forged_fields_refused(token: str) -> None:
    """A token is not signed: what it decodes to is checked before it can reach a query."""
    with pytest.raises(InvalidArgument) as caught:
        page_token.decode(token, "q1")
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


def test_longest_real_token_accepted() -> None:
    when = datetime(9999, 12, 31, tzinfo=UTC)
    token = page_token.encode((when, "\U0001f642" * 128), "0123456789abcdef")
    assert page_token.decode(token, "0123456789abcdef") == (when, "\U0001f642" * 128)
