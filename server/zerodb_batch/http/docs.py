"""`GET /openapi.json` (made from the protos by scripts/gen_protos.py) and `GET /docs`.

The docs page is Swagger UI from the swagger-ui-py package, served from this process: it works
without any network access.
"""

from __future__ import annotations

import importlib.resources
from functools import cache
from typing import Any

import orjson
from aiohttp import web
from swagger_ui import api_doc

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"


@cache
def openapi_bytes() -> bytes:
    """The OpenAPI document generated next to the protobuf modules."""
    return importlib.resources.files("zerodb").joinpath("openapi.json").read_bytes()


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(openapi_bytes())
    return loaded


async def _openapi(_: web.Request) -> web.Response:
    return web.Response(body=openapi_bytes(), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_get(OPENAPI_PATH, _openapi)
    api_doc(
        app,
        app_type="aiohttp",
        config=document(),
        url_prefix=DOCS_PATH,
        title="zerodb-batch API",
        host_inject=False,
    )
