"""The Grafana dashboard, the alert rules and the README's "Operating it" name only metrics the
server exports, and the README documents every metric it exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.plugins.metrics import scrape
from tests.plugins.server import ServerThread

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\b((?:zerodb|process)_[a-z_]+)\b(?!\.)")  # not zerodb_batch.rpc
TYPE = re.compile(r"^# TYPE (\S+) ", re.MULTILINE)
SUFFIXES = ("_bucket", "_sum", "_count", "_total")


@pytest.fixture(scope="module")
def exported(server: ServerThread) -> set[str]:
    assert server.http is not None
    return set(TYPE.findall(scrape(server.http).text))


def unknown(text: str, exported: set[str]) -> set[str]:
    """Metric names in `text` the server does not export (a histogram's series count as its)."""
    names = set(NAME.findall(text))
    return {
        n for n in names
        if n not in exported and not any(n.removesuffix(s) in exported for s in SUFFIXES)
    }  # fmt: skip


def operating_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Operating it", 1)[1].split("\n## ", 1)[0]


def test_the_dashboard_queries_exported_metrics(exported: set[str]) -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/zerodb-batch.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    assert unknown("\n".join(exprs), exported) == set()


def test_the_alerts_use_exported_metrics(exported: set[str]) -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert exprs and unknown("\n".join(exprs), exported) == set()


def test_the_readme_documents_every_metric_and_no_other(exported: set[str]) -> None:
    section = operating_section()
    assert unknown(section, exported) == set()
    ours = {n for n in exported if n.startswith("zerodb_")}
    assert ours - set(NAME.findall(section)) == set(), "exported but not in the README"
