"""What every benchmark needs: embedded backends in a temp dir, our server as a subprocess, and
its report: printed, and written to bench/results/<bench>.json for `python -m bench.report`.

The server runs in its own process (as in production), so client and server do not share a GIL;
on the 2-core machines they still share the CPU, as the raw path's client and PostgreSQL do.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from zerodb_batch.embedded import EmbeddedPostgres, EmbeddedValkey

RESULTS = Path(__file__).parent / "results"
_started: set[Path] = set()  # result files this run has begun (earlier runs' are replaced)


@dataclass(frozen=True)
class Service:
    address: str
    project_id: str
    api_key: str
    database_url: str
    redis_url: str
    pid: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def backends() -> Iterator[tuple[str, str]]:
    """Embedded PostgreSQL and Valkey in a fresh temp dir: (database_url, redis_url)."""
    with tempfile.TemporaryDirectory(prefix="zdb-bench-") as tmp:
        pg, vk = EmbeddedPostgres(Path(tmp)), EmbeddedValkey(Path(tmp))
        try:
            yield pg.start(), vk.start()
        finally:
            vk.stop()
            pg.stop()


@contextlib.contextmanager
def service(
    database_url: str, redis_url: str, log: IO[str] | None = None, **env: str
) -> Iterator[Service]:
    """`python -m zerodb_batch serve` against the given backends; its first-start key is used.
    Its log goes to `log` (default: this process's stderr)."""
    address = f"127.0.0.1:{free_port()}"
    environ = {
        **os.environ,
        "ZERODB_DATABASE_URL": database_url,
        "ZERODB_REDIS_URL": redis_url,
        "ZERODB_LISTEN": address,
        "ZERODB_LOG_LEVEL": "WARNING",
        "ZERODB_HTTP_LISTEN": "off",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "zerodb_batch", "serve"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        found = _read_banner(proc)
        yield Service(
            address, found["project_id"], found["api_key"], database_url, redis_url, proc.pid
        )
    finally:
        proc.terminate()
        proc.wait(30)


def _read_banner(proc: subprocess.Popen[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        if m := re.match(r"(project_id|api_key): (\S+)", line):
            found[m[1]] = m[2]
        if len(found) == 2:
            return found
    raise RuntimeError(f"server exited ({proc.wait()}) before printing its key; empty database?")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(
    title: str,
    unit: str,
    ours: list[float],
    raw: list[float],
    names: tuple[str, str] = ("service", "raw"),
    bench: str = "",
) -> None:
    """Medians of per-round rates, and our rate as a fraction of the raw path's (or of whatever
    `names` says the two sides are); printed and added to this bench's results file."""
    o, r = statistics.median(ours), statistics.median(raw)
    width = max(len(n) for n in names) + 1
    print(f"{title}")
    for name, value, rounds in ((names[0], o, ours), (names[1], r, raw)):
        print(f"  {name + ':':{width}} {value:10.1f} {unit}   (rounds: "
              f"{', '.join(f'{x:.0f}' for x in rounds)})")  # fmt: skip
    print(f"  ratio {names[0]}/{names[1]}: {o / r:.2f}")
    record({"title": title, "unit": unit, "names": names, "ours": o, "raw": r, "ratio": o / r,
            "rounds": {"ours": ours, "raw": raw}}, bench)  # fmt: skip


def record(result: dict[str, object], bench: str = "", folder: Path = RESULTS) -> None:
    """Add `result` to `folder`/<bench>.json (default: the running bench module's name); the
    first result of a run replaces what an earlier run wrote."""
    bench = bench or _bench_name()
    path = folder / f"{bench}.json"
    found = json.loads(path.read_text()) if path in _started else {"bench": bench, "results": []}
    _started.add(path)
    found["when"] = datetime.now(UTC).isoformat(timespec="seconds")
    found["results"].append(result)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(found, indent=1) + "\n")


def _bench_name() -> str:
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    return spec.name.rpartition(".")[2] if spec else Path(sys.argv[0]).stem


@dataclass
class Rss:
    """Resident memory of a process (kB), sampled during a run."""

    pid: int
    samples: dict[str, tuple[int, int]] = field(default_factory=dict)  # label -> (rss, peak)

    def sample(self, label: str) -> None:
        with open(f"/proc/{self.pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status.read().splitlines())
        self.samples[label] = (_kb(fields["VmRSS"]), _kb(fields["VmHWM"]))

    def report(self, who: str = "server") -> None:
        for label, (now, peak) in self.samples.items():
            mib, peak_mib = now / 1024, peak / 1024
            print(f"  {who} RSS at {label:>22}: {mib:7.1f} MiB (peak so far {peak_mib:.1f})")


def _kb(value: str) -> int:
    return int(value.split()[0])


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process has used."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (from /proc/stat): the
    difference of two readings says how saturated the machine was in between."""
    with open("/proc/stat") as stat:
        ticks = [int(t) for t in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / tick, sum(ticks) / tick
