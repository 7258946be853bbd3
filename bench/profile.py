"""`python -m bench.profile NAME [ARGS...]`: a bench run under py-spy, drawn as a flame graph.

Runs `python -m bench.NAME ARGS...` under `py-spy record --subprocesses` (100 samples/s, without
pausing the processes), so the bench client and the `zerodb-batch serve` it starts are sampled
together; PostgreSQL and Valkey are not Python and do not appear. Writes
`bench/results/profile-NAME.svg` (a flame graph: one tower per process, click-free, each frame's
samples in its tooltip) and `profile-NAME.txt` (py-spy's collapsed stacks), and prints where the
server's busy samples are: by innermost frame, and by innermost frame of our own code. Needs
`pip install -e '.[bench]'` (py-spy) and the right to trace child processes (the default for a
process's own children).

    python -m bench.profile memory_upsert --calls 20 --rounds 2
"""

from __future__ import annotations

import html
import subprocess
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import RESULTS

WIDTH, ROW = 1600, 16  # pixels
SERVER = "zerodb_batch serve"


@dataclass
class Frame:
    samples: int = 0
    children: dict[str, Frame] = field(default_factory=dict)


def record(name: str, args: list[str], raw: Path) -> None:
    command = [sys.executable, "-m", f"bench.{name}", *args]
    spy = ["py-spy", "record", "--subprocesses", "--nonblocking", "--rate", "100"]
    subprocess.run([*spy, "--format", "raw", "-o", str(raw), "--", *command], check=True)


def read(raw: Path) -> list[tuple[list[str], int]]:
    """py-spy's collapsed stacks: (frames from the root, samples)."""
    stacks = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            stacks.append((stack.split(";"), int(count)))
    return stacks


def tree(stacks: list[tuple[list[str], int]]) -> Frame:
    root = Frame()
    for frames, count in stacks:
        root.samples += count
        node = root
        for name in frames:
            node = node.children.setdefault(name, Frame())
            node.samples += count
    return root


def hot_spots(
    stacks: list[tuple[list[str], int]], within: str = "", top: int = 8
) -> list[tuple[str, float]]:
    """Where the server spends its time: for each sample, its innermost frame (`within`: its
    innermost frame whose text holds `within`, such as our package), as a share of the server's
    busy samples. Start-up (imports) and waits for I/O (the event loop's select) are left out."""
    own: Counter[str] = Counter()
    for frames, count in stacks:
        server = next((i for i, f in enumerate(frames[:2]) if SERVER in f), None)
        calls = frames[server + 1 :] if server is not None else []
        if not calls or any(_IGNORED in f for f in calls) or "select (selectors.py" in calls[-1]:
            continue
        ours = [f for f in calls if within in f]
        own[ours[-1] if ours else "(outside " + within + ")"] += count
    total = sum(own.values()) or 1
    return [(name, n / total) for name, n in own.most_common(top)]


_IGNORED = "<frozen importlib"


def svg(root: Frame, title: str) -> str:
    depth = _depth(root)
    height = (depth + 2) * ROW
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="monospace" font-size="11">',
        f'<text x="4" y="12">{html.escape(title)} ({root.samples} samples)</text>',
    ]
    _draw(root, 0.0, 1, WIDTH / max(root.samples, 1), height, parts)
    return "\n".join([*parts, "</svg>"]) + "\n"


def _draw(node: Frame, x: float, level: int, scale: float, height: int, out: list[str]) -> None:
    for name, child in sorted(node.children.items()):
        width = child.samples * scale
        if width >= 0.5:  # narrower than half a pixel: invisible, and heavy in the file
            y = height - (level + 1) * ROW  # roots at the bottom, as flame graphs go
            hue = zlib.crc32(name.encode()) % 50  # warm colours, stable per frame
            label = html.escape(name)
            out.append(
                f'<g><title>{label} ({child.samples} samples)</title>'
                f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{ROW - 1}" '
                f'fill="hsl({hue + 5},80%,60%)"/>'
                + (f'<text x="{x + 2:.1f}" y="{y + 11}">{label[: int(width / 7)]}</text>'
                   if width > 30 else "")
                + "</g>"
            )  # fmt: skip
            _draw(child, x, level + 1, scale, height, out)
        x += width


def _depth(node: Frame) -> int:
    return 1 + max((_depth(c) for c in node.children.values()), default=0)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    name, args = sys.argv[1], sys.argv[2:]
    raw, image = RESULTS / f"profile-{name}.txt", RESULTS / f"profile-{name}.svg"
    record(name, args, raw)
    stacks = read(raw)
    image.write_text(svg(tree(stacks), f"bench.{name} {' '.join(args)}"))
    print(f"flame graph: {image}")
    for within, what in (("", "innermost frames"), ("zerodb_batch/", "innermost frames of ours")):
        print(f"the server's busy samples by {what}:")
        for frame, share in hot_spots(stacks, within):
            print(f"  {share:6.1%}  {frame}")


if __name__ == "__main__":
    main()
