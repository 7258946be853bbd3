"""500-record BatchUpsertMemories calls through our service vs the same upserts through psycopg.

Each batch replaces 250 memories of the previous batch and inserts 250 new ones (the "half
existing" upsert of DESIGN.md section 9). Rounds alternate between the two paths; medians print.

    python -m bench.memory_upsert [--calls 40] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import psycopg

from bench.harness import backends, report, service, timed
from zerodb.v1 import memory_pb2, memory_pb2_grpc
from zerodb_batch.storage.queries import Q

BATCH = 500


def batches(calls: int) -> list[list[dict[str, object]]]:
    """`calls` batches of plain records; each reuses half the ids of the one before."""
    out, previous = [], [str(uuid.uuid4()) for _ in range(BATCH)]
    for c in range(calls):
        ids = previous[BATCH // 2 :] + [str(uuid.uuid4()) for _ in range(BATCH // 2)]
        out.append(
            [
                {
                    "id": i,
                    "content": f"fact {c}/{n}: " + "x" * 150,
                    "memory_type": "semantic",
                    "importance": 0.7,
                    "tags": ["bench", "memory", f"t{n % 7}"],
                    "metadata": {"source": "bench", "n": n},
                }
                for n, i in enumerate(ids)
            ]
        )
        previous = ids
    return out


def to_request(
    project_id: str, batch: list[dict[str, object]]
) -> memory_pb2.BatchUpsertMemoriesRequest:
    request = memory_pb2.BatchUpsertMemoriesRequest(project_id=project_id)
    for r in batch:
        m = request.records.add(
            id=r["id"],
            content=r["content"],
            memory_type=r["memory_type"],
            importance=r["importance"],
            tags=r["tags"],
        )
        m.metadata.update(r["metadata"])
    return request


def raw_params(project_id: str, batch: list[dict[str, Any]]) -> dict[str, object]:
    """The statement's parameters built straight from plain records, as a psycopg user would."""
    tag_values: list[str] = []
    tag_from, tag_to = [], []
    for r in batch:
        tag_from.append(len(tag_values) + 1)
        tag_values.extend(r["tags"])
        tag_to.append(len(tag_values))
    return {
        "project_id": project_id,
        "ids": [r["id"] for r in batch],
        "contents": [r["content"] for r in batch],
        "memory_types": [r["memory_type"] for r in batch],
        "importances": [r["importance"] for r in batch],
        "tag_values": tag_values,
        "tag_from": tag_from,
        "tag_to": tag_to,
        "metadata": [json.dumps(r["metadata"]) for r in batch],
        # No record has these: one NULL each, which unnest pads (as the service sends them).
        "session_ids": None,
        "agent_ids": None,
        "entity_ids": None,
    }


def service_round(
    stub: memory_pb2_grpc.MemoryServiceStub,
    key: str,
    requests: list[memory_pb2.BatchUpsertMemoriesRequest],
) -> Callable[[], None]:
    def run() -> None:
        for request in requests:
            stub.BatchUpsertMemories(request, metadata=(("x-api-key", key),))

    return run


def raw_round(
    conn: psycopg.Connection[tuple[object, ...]], work: list[dict[str, object]]
) -> Callable[[], None]:
    def run() -> None:
        for params in work:
            with conn.transaction():
                conn.execute(Q["memory_upsert"], params).fetchall()

    return run


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--calls", type=int, default=40, help="calls per round")
    args.add_argument("--rounds", type=int, default=5)
    opts = args.parse_args()
    with (
        backends() as (db_url, redis_url),
        service(db_url, redis_url) as svc,
        grpc.insecure_channel(svc.address) as channel,
        psycopg.connect(db_url, autocommit=True) as conn,
    ):
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        raw_project = str(uuid.uuid4())
        ours, raw = [], []

        # Each side's input is prepared before the clock starts (protobuf messages for us,
        # parameter lists for psycopg): what is timed is the service against the database.
        def ours_for(n: int) -> Callable[[], None]:
            requests = [to_request(svc.project_id, b) for b in batches(n)]
            return service_round(stub, svc.api_key, requests)

        def raw_for(n: int) -> Callable[[], None]:
            return raw_round(conn, [raw_params(raw_project, b) for b in batches(n)])

        ours_for(3)()  # warm-up: connections, prepared statements
        raw_for(3)()
        for _ in range(opts.rounds):
            ours.append(opts.calls / timed(ours_for(opts.calls)))
            raw.append(opts.calls / timed(raw_for(opts.calls)))
        report(f"BatchUpsertMemories, {BATCH} records a call (half existing)", "calls/s", ours, raw)


if __name__ == "__main__":
    main()
