"""The benchmarks' results as one chart: for every comparison, our service's rate as a fraction
of the raw path's (or of the other side the bench names), with both medians written beside it.
Results that are costs rather than rates (CPU per call; marked `"chart": false`) are left out.

Each bench writes bench/results/<bench>.json when it runs (bench/harness.py); this reads them all.
Needs matplotlib (`pip install -e '.[bench]'`).

    python -m bench.report [--out bench/results/report.png]
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display; chosen before pyplot is imported
import matplotlib.pyplot as plt

from bench.harness import RESULTS

COLOR = "#3b6ea8"


def load(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """(bench, result) for every result of every bench, in bench order."""
    found = []
    for path in sorted(folder.glob("*.json")):
        bench = json.loads(path.read_text())
        found += [(bench["bench"], r) for r in bench["results"] if r.get("chart", True)]
    return found


def label(bench: str, result: dict[str, Any]) -> str:
    return "\n".join(textwrap.wrap(f"{bench}: {result['title']}", 60))


def figures(result: dict[str, Any]) -> str:
    ours, raw = result["names"]
    unit = result["unit"]
    return f"{ours} {result['ours']:,.0f} vs {raw} {result['raw']:,.0f} {unit}"


def chart(results: list[tuple[str, dict[str, Any]]], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(13, 0.9 * len(results) + 1.5))
    ratios = [r["ratio"] for _, r in results]
    rows = range(len(results))[::-1]  # the first result on top
    ax.barh(list(rows), ratios, color=COLOR)
    ax.axvline(1.0, color="grey", linewidth=1, linestyle="--")  # the raw path (second side)
    ax.set_yticks(list(rows), [label(b, r) for b, r in results], fontsize=8)
    for row, (_, result) in zip(rows, results, strict=True):
        ax.text(result["ratio"] + 0.01, row, f"{result['ratio']:.2f}  ({figures(result)})",
                va="center", fontsize=8)  # fmt: skip
    ax.set_xlim(0, max(ratios) + 1.0)  # room for the figures written beside the bars
    ax.set_xlabel("ratio: service / raw path (or first / second side), medians of one run")
    ax.set_title("zerodb-batch benchmarks, each against its raw path in the same run")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--results", type=Path, default=RESULTS)
    args.add_argument("--out", type=Path, default=RESULTS / "report.png")
    opts = args.parse_args()
    results = load(opts.results)
    if not results:
        raise SystemExit(f"no results in {opts.results}: run the benchmarks first")
    chart(results, opts.out)
    print(f"{len(results)} results charted in {opts.out}")


if __name__ == "__main__":
    main()
