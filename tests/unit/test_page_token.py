"""Page tokens: exact positions, bound to their query, signed: forged or mangled ones refused."""

from __future__ import annotations

import base64
import json

import pytest

from zerodb.v1 import event_pb2, memory_pb2
from zerodb_batch.domain.page_token import PageTokens, page_size
from zerodb_batch.domain.validate import Checker
from zerodb_batch.errors import InvalidArgument

TOKENS = PageTokens(b"k" * 32)
SHAPE = (int, str)


def request(token: str = "", **filters: object) -> memory_pb2.ListMemoriesRequest:
    return memory_pb2.ListMemoriesRequest(project_id="p", page_token=token, **filters)  # type: ignore[arg-type]


def reason(req: memory_pb2.ListMemoriesRequest, tokens: PageTokens = TOKENS) -> str:
    with pytest.raises(InvalidArgument) as caught:
        tokens.decode(req, SHAPE)
    return caught.value.reason


def test_round_trip_keeps_the_position() -> None:
    token = TOKENS.encode(request(), (1_764_000_000_123_457, "mem-9"))
    assert TOKENS.decode(request(token), SHAPE) == (1_764_000_000_123_457, "mem-9")
    assert "=" not in token and "/" not in token and "+" not in token


def test_no_token_is_the_first_page() -> None:
    assert TOKENS.decode(request(), SHAPE) is None


def test_page_size_and_token_are_not_part_of_the_query() -> None:
    token = TOKENS.encode(request(page_size=5), (1, "m"))
    assert TOKENS.decode(request(token, page_size=500), SHAPE) == (1, "m")


def test_token_of_other_filters_refused() -> None:
    token = TOKENS.encode(request(tags=["x"]), (1, "m"))
    assert reason(request(token, tags=["y"])) == "PAGE_TOKEN_MISMATCH"


def test_token_of_another_project_refused() -> None:
    token = TOKENS.encode(request(), (1, "m"))
    other = memory_pb2.ListMemoriesRequest(project_id="q", page_token=token)
    assert reason(other) == "PAGE_TOKEN_MISMATCH"


def test_token_signed_by_another_key_refused() -> None:
    token = PageTokens(b"x" * 32).encode(request(), (1, "m"))
    assert reason(request(token)) == "PAGE_TOKEN_INVALID"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "!!!",
        "bnVsbA",
        "a.b",
        ".",
        "é.é",
        "A" * 5000,
        b64(json.dumps(["q", 1, "m"]).encode()) + "." + b64(b"\0" * 16),  # made up, unsigned
    ],
)
def test_mangled_or_made_up_tokens_refused(token: str) -> None:
    assert reason(request(token)) == "PAGE_TOKEN_INVALID"


def test_altered_position_refused() -> None:
    body, tag = TOKENS.encode(request(), (1, "m")).split(".")
    altered = json.loads(base64.urlsafe_b64decode(body + "=="))
    altered[1] = 2
    assert reason(request(b64(json.dumps(altered).encode()) + "." + tag)) == "PAGE_TOKEN_INVALID"


def test_a_token_of_another_list_shape_refused() -> None:
    """Even a genuine token only decodes into the position shape of its own list."""
    events = event_pb2.ListEventsRequest(project_id="p")
    token = TOKENS.encode(events, (7,))
    with pytest.raises(InvalidArgument):
        TOKENS.decode(event_pb2.ListEventsRequest(project_id="p", page_token=token), SHAPE)


@pytest.mark.parametrize(("asked", "used"), [(0, 50), (1, 1), (1000, 1000), (5000, 1000)])
def test_page_size_defaults_and_is_lowered_to_the_maximum(asked: int, used: int) -> None:
    checker = Checker("")
    assert page_size(checker, asked, 50) == used
    assert checker.violations == []


def test_negative_page_size_refused() -> None:
    checker = Checker("")
    page_size(checker, -1, 50)
    assert [v.reason for v in checker.violations] == ["OUT_OF_RANGE"]
