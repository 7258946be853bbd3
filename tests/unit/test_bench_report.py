"""The benches' result files and the chart bench/report.py draws from them."""

from __future__ import annotations

import json
from pathlib import Path

from bench import report
from bench.harness import record


def test_results_are_recorded_per_run_and_charted(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "memory_upsert.json").write_text('{"bench": "memory_upsert", "results": [1]}')
    for title, ratio in (("upsert", 0.72), ("update", 1.1)):
        result = {"title": title, "unit": "calls/s", "names": ("service", "raw"),
                  "ours": 72.0 * ratio, "raw": 72.0, "ratio": ratio}  # fmt: skip
        record(result, "memory_upsert", results)
    record({"title": "one", "unit": "events/s", "names": ("HTTP", "gRPC"), "ours": 5.0,
            "raw": 10.0, "ratio": 0.5}, "http", results)  # fmt: skip
    record({"title": "CPU", "unit": "µs", "names": ("a", "b"), "ours": 2.0, "raw": 1.0,
            "ratio": 2.0, "chart": False}, "http", results)  # fmt: skip

    written = json.loads((results / "memory_upsert.json").read_text())
    assert [r["title"] for r in written["results"]] == ["upsert", "update"], "a run starts afresh"
    found = report.load(results)  # without the costs (not rates)
    assert [(bench, r["title"]) for bench, r in found] == [
        ("http", "one"),
        ("memory_upsert", "upsert"),
        ("memory_upsert", "update"),
    ]
    assert "HTTP 5 vs gRPC 10 events/s" in report.figures(found[0][1])
    out = tmp_path / "chart.png"
    report.chart(found, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
