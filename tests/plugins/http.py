"""The HTTP/JSON door of a test server: a project's base URL, JSON calls, SSE and error checks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from tests.plugins.server import Project, ServerThread


@dataclass(frozen=True)
class Door:
    """A project's view of a server's HTTP door: `base` is ZeroDB's `.../database` URL."""

    root: str
    project: Project

    @property
    def base(self) -> str:
        return f"{self.root}/api/v1/projects/{self.project.id}/database"

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.project.key}

    def post(self, path: str, body: Any, **headers: str) -> requests.Response:
        return requests.post(
            self.base + path, json=body, headers={**self.headers, **headers}, timeout=60
        )

    def get(self, path: str, **params: Any) -> requests.Response:
        return requests.get(self.base + path, params=params, headers=self.headers, timeout=60)


def door_of(server: ServerThread, project: Project) -> Door:
    assert server.http is not None, "the test server has its HTTP door off"
    return Door(server.http, project)


@pytest.fixture
def door(server: ServerThread, project: Project) -> Door:
    return door_of(server, project)


def error_of(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    """The `error` object of a failed call, checked for its HTTP status and status name; its
    details are keyed by their type's short name (`ErrorInfo`, `BadRequest`)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert (error["code"], error["status"]) == (status, code), error
    error["by_type"] = {d["@type"].rsplit(".", 1)[-1]: d for d in error["details"]}
    return error


@dataclass
class SseEvent:
    event: str = "message"
    id: str | None = None
    data: list[str] = field(default_factory=list)


def sse_events(response: requests.Response) -> Iterator[SseEvent]:
    """The events of a text/event-stream response, as a browser's EventSource parses them."""
    current = SseEvent()
    for line in response.iter_lines(decode_unicode=True):
        if not line:
            if current.data:
                yield current
            current = SseEvent()
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                current.data.append(value)
            elif name == "event":
                current.event = value
            elif name == "id":
                current.id = value
