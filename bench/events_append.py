"""The relay's append: a pipeline of 100 plain XADDs (what it sent before) against one EVAL of the
append script, which first checks that the stream still ends at the project's mark (so that a
Redis that lost events is refilled before anything newer goes in) and then runs the XADDs.
Both are packed by hiredis and sent on one connection, rounds alternating; medians and ratio.

    python -m bench.events_append [--batches 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import hiredis
import redis

from zerodb_batch.domain.event import StoredEvent
from zerodb_batch.embedded import EmbeddedValkey
from zerodb_batch.events.streams import Streams, stream_key

BATCH = 100


def events(first: int) -> list[StoredEvent]:
    now = datetime.now(UTC)
    payload = '{"agent": "agent-7", "status": "completed", "detail": "' + "x" * 120 + '"}'
    return [
        StoredEvent(first + n, f"00000000-0000-0000-0000-{first + n:012d}", "t", payload, now)
        for n in range(BATCH)
    ]


def plain_xadds(project: str, batch: list[StoredEvent]) -> bytes:
    key = stream_key(project)
    return b"".join(
        hiredis.pack_command(
            cast(Any, ("XADD", key, "MAXLEN", "~", "100000", str(e.position), "event_id", e.id,
                       "topic", e.topic, "payload", e.payload, "published_at", "x"))
        )
        for e in batch
    )  # fmt: skip


def run(conn: Any, packed: list[tuple[bytes, int]]) -> float:
    """Events a second: each packed append sent, and its replies read, in turn."""
    start = time.perf_counter()
    for data, replies in packed:
        conn.send_packed_command([data])
        for _ in range(replies):
            conn.read_response()
    return len(packed) * BATCH / (time.perf_counter() - start)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--batches", type=int, default=200)
    args.add_argument("--rounds", type=int, default=5)
    opts = args.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        valkey = EmbeddedValkey(Path(tmp))
        url = valkey.start()
        try:
            client = redis.Redis.from_url(url)
            conn = client.connection_pool.get_connection()
            streams = Streams.open(url, maxlen=100_000, max_connections=1)
            plain, script = [], []
            for r in range(opts.rounds):
                seqs = [1 + (r * opts.batches + b) * BATCH for b in range(opts.batches)]
                a = [(plain_xadds(f"plain-{r}", events(s)), BATCH) for s in seqs]
                b = [(streams.prepare(f"script-{r}", events(s)).data, 1) for s in seqs]
                plain.append(run(conn, a))
                script.append(run(conn, b))
        finally:
            valkey.stop()
    p, s = statistics.median(plain), statistics.median(script)
    print(f"plain XADD pipeline: {p:,.0f} events/s; append script: {s:,.0f} events/s;"
          f" script/plain {s / p:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
