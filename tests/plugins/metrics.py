"""Reading /metrics as Prometheus does: a real HTTP scrape parsed by prometheus_client's parser."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import requests
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.plugins.checks import wait_for


@dataclass(frozen=True)
class Scrape:
    """One scrape's samples and its raw text."""

    text: str
    samples: tuple[Sample, ...]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels` (0 if none)."""
        return sum(s.value for s in self.matching(name, **labels))

    def matching(self, name: str, **labels: str) -> list[Sample]:
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def has(self, name: str, **labels: str) -> bool:
        return bool(self.matching(name, **labels))


def scrape(base_url: str) -> Scrape:
    """GET {base_url}/metrics, checked to be Prometheus's text format."""
    response = requests.get(f"{base_url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = text_string_to_metric_families(response.text)
    return Scrape(response.text, tuple(s for f in families for s in f.samples))


def rpc(method: str) -> dict[str, str]:
    """The labels of a zerodb.v1 method: `rpc("MemoryService/BatchUpsertMemories")`."""
    service, name = method.split("/")
    return {"service": f"zerodb.v1.{service}", "method": name}


def scrape_until(base_url: str, what: str, holds: Callable[[Scrape], bool]) -> Scrape:
    """Scrape until `holds` is true of a scrape (fail after wait_for's timeout); return it."""

    def probe() -> Scrape | None:
        found = scrape(base_url)
        return found if holds(found) else None

    return wait_for(probe, what)
