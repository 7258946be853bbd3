"""`GET /openapi.json` and the docs page: a valid OpenAPI 3.1 document covering every route."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from openapi_spec_validator import validate

from tests.plugins.server import ServerThread
from zerodb_batch.app import SERVICES
from zerodb_batch.http.rules import Binding, bindings

ROOT = Path(__file__).resolve().parents[2]
REF = "#/components/schemas/"


@pytest.fixture(scope="module")
def document(server: ServerThread) -> dict[str, Any]:
    reply = requests.get(f"{server.http}/openapi.json", timeout=30)
    assert reply.status_code == 200
    doc: dict[str, Any] = reply.json()
    return doc


def test_it_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)


def openapi_path(binding: Binding) -> str:
    return re.sub(r"\{([\w.]+)=[^}]*\}", r"{\1}", binding.template)


@pytest.mark.parametrize("binding", list(bindings(SERVICES)), ids=lambda b: b.method.name)
def test_every_route_is_there_with_its_schemas(document: dict[str, Any], binding: Binding) -> None:
    operation = document["paths"][openapi_path(binding)][binding.verb.lower()]
    request, response = binding.method.input_type, binding.method.output_type
    assert (
        operation["operationId"]
        == f"{binding.method.containing_service.name}_{binding.method.name}"
    )
    assert operation["description"]  # from the proto comment
    schemas = document["components"]["schemas"]
    assert response.full_name in schemas
    if binding.server_streaming:
        assert "text/event-stream" in operation["responses"]["200"]["content"]
    else:
        body = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert body == {"$ref": REF + response.full_name}
    if binding.body:  # the request message is the body's schema
        content = operation["requestBody"]["content"]
        media = "application/x-ndjson" if binding.client_streaming else "application/json"
        assert REF + request.full_name in str(content[media]["schema"])
        for field in request.fields:
            assert schemas[request.full_name]["properties"][field.name]["description"]
    else:  # its fields are the parameters, each described
        parameters = operation["parameters"]
        assert {p["name"] for p in parameters} == {f.name for f in request.fields}
        assert all(p["description"] and p["schema"] for p in parameters)


def test_the_served_document_is_the_generated_file(document: dict[str, Any]) -> None:
    import json

    generated = json.loads((ROOT / "generated" / "zerodb" / "openapi.json").read_text())
    assert document == generated


def test_the_generated_file_is_current(tmp_path: Path) -> None:
    """What CI checks too, on its own: gen_protos.py writes the same document again."""
    script = (
        "import sys, json; sys.path.insert(0, 'scripts'); import gen_protos, openapi;"
        "from pathlib import Path; s = sorted(gen_protos.PROTOS.rglob('*.proto'));"
        "g = gen_protos.googleapis_root();"
        "print(json.dumps(openapi.build(gen_protos.descriptor_set(s, g)), indent=2,"
        " ensure_ascii=False))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == (ROOT / "generated" / "zerodb" / "openapi.json").read_text()


def test_docs_page_is_self_contained(server: ServerThread) -> None:
    page = requests.get(f"{server.http}/docs", timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/docs/") for s in sources)  # nothing from a CDN
    for source in sources:
        assert requests.get(f"{server.http}{source}", timeout=30).status_code == 200
    spec = requests.get(f"{server.http}/docs/swagger.json", timeout=30).json()
    assert spec["openapi"] == "3.1.0"
