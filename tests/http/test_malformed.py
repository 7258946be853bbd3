"""Bodies and requests the door refuses by itself: always 4xx with the error body, never 500."""

from __future__ import annotations

import pytest
import requests

from tests.plugins.http import Door, error_of

UPSERT = "/memory/batch/upsert"


def post_raw(door: Door, body: bytes | str, content_type: str | None) -> requests.Response:
    headers = dict(door.headers)
    if content_type is not None:
        headers["content-type"] = content_type
    return requests.post(door.base + UPSERT, data=body, headers=headers, timeout=30)


@pytest.mark.parametrize("body", ["{", '{"records": [}', "nul", '{"records": NaN}', "\xff"])
def test_malformed_json(door: Door, body: str) -> None:
    error = error_of(post_raw(door, body, "application/json"), 400, "INVALID_ARGUMENT")
    assert error["by_type"]["ErrorInfo"]["reason"] == "MALFORMED_JSON"
    assert error["message"].startswith("malformed JSON")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type(door: Door, content_type: str | None) -> None:
    error = error_of(post_raw(door, '{"records": []}', content_type), 415, "INVALID_ARGUMENT")
    assert error["by_type"]["ErrorInfo"]["reason"] == "UNSUPPORTED_MEDIA_TYPE"


def test_unknown_field_named_by_path(door: Door) -> None:
    error = error_of(
        door.post(UPSERT, {"records": [{}, {"colour": "red"}]}), 400, "INVALID_ARGUMENT"
    )
    violation = error["by_type"]["BadRequest"]["field_violations"][0]
    assert (violation["field"], violation["reason"]) == ("records[1].colour", "UNKNOWN_FIELD")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"records": [{"importance": "high"}]}, "records[0].importance"),
        ({"records": [{"tags": "a"}]}, "records[0].tags"),
        ({"records": {"content": "x"}}, "records"),
        ({"partial_success": "yes"}, "partial_success"),
        ({"records": [{"metadata": [1, 2]}]}, "records[0].metadata"),
        ({"records": [None]}, "records[0]"),
    ],
)
def test_wrong_types_name_the_field(door: Door, body: object, field: str) -> None:
    error = error_of(door.post(UPSERT, body), 400, "INVALID_ARGUMENT")
    violation = error["by_type"]["BadRequest"]["field_violations"][0]
    assert violation["field"] == field, error


@pytest.mark.parametrize("body", ['"records"', "42", "true"])
def test_body_not_an_object(door: Door, body: str) -> None:
    error = error_of(post_raw(door, body, "application/json"), 400, "INVALID_ARGUMENT")
    assert error["by_type"]["ErrorInfo"]["reason"] == "INVALID_BODY"


@pytest.mark.parametrize("depth", [60, 200, 2000])
def test_deep_nesting_is_refused_not_crashed(door: Door, depth: int) -> None:
    body = '{"records": [{"metadata": ' + '{"a": ' * depth + "1" + "}" * depth + "}]}"
    error = error_of(post_raw(door, body, "application/json"), 400, "INVALID_ARGUMENT")
    assert "nest" in error["message"] or "malformed JSON" in error["message"]


def test_a_bare_array_is_the_one_repeated_field(door: Door) -> None:
    reply = door.post(UPSERT, [{"content": "a"}, {"content": "b"}])
    assert reply.status_code == 200 and reply.json()["inserted"] == 2


def test_camel_case_names_work_as_in_json_format(door: Door) -> None:
    reply = door.post(UPSERT, {"records": [{"content": "a", "memoryType": "working"}]})
    assert reply.status_code == 200, reply.text
    got = door.post("/memory/batch/get", {"ids": reply.json()["ids"]}).json()["memories"][0]
    assert got["memory_type"] == "working"


def test_path_and_body_must_agree(door: Door) -> None:
    error = error_of(
        door.post(UPSERT, {"project_id": "other", "records": []}), 400, "INVALID_ARGUMENT"
    )
    assert error["by_type"]["ErrorInfo"]["reason"] == "PATH_MISMATCH"


def test_unknown_query_parameter(door: Door) -> None:
    error = error_of(door.get("/memory", colour="red"), 400, "INVALID_ARGUMENT")
    assert error["by_type"]["BadRequest"]["field_violations"][0]["field"] == "colour"


def test_query_parameters_of_every_kind(door: Door) -> None:
    door.post(UPSERT, {"records": [{"content": "t", "tags": ["a", "b"], "importance": 0.9}]})
    reply = door.get(
        "/memory", page_size="5", tags=["a", "z"], tag_match="TAG_MATCH_ALL",
        min_importance="0.5", start_time="2000-01-01T00:00:00Z",
    )  # fmt: skip
    assert reply.status_code == 200, reply.text
    assert reply.json()["memories"] == []  # TAG_MATCH_ALL: no memory has "z"
    reply = door.get("/memory", tags="a", tag_match="TAG_MATCH_ANY")
    assert [m["content"] for m in reply.json()["memories"]] == ["t"]


def test_unknown_route_and_wrong_method(door: Door) -> None:
    error_of(requests.get(door.base + "/nothing", timeout=30), 404, "NOT_FOUND")
    reply = requests.get(door.base + UPSERT, headers=door.headers, timeout=30)
    error_of(reply, 405, "UNIMPLEMENTED")
    assert reply.headers["Allow"] == "POST"
