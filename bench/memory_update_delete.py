"""500-item BatchUpdateMemories and BatchDeleteMemories through our service vs psycopg.

The raw path runs the very statements the service runs (memory_update, memory_delete) with the
same parameters, one transaction a call, without gRPC, validation, auth or idempotency: one
statement for the 500 updates, where the service sends one per slice of 125 it has validated. Each
update sets two present fields (importance and tags) of 500 existing memories; each delete
removes 500 existing memories. The service runs twice a round: with the default full results
(500 per-item results a reply) and with `result_view` FAILURES, which answers what the raw
statement does (the counts and the ids not found). Rounds alternate between the paths; medians
print.

    python -m bench.memory_update_delete [--calls 40] [--rounds 5]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import grpc
import psycopg

from bench.harness import backends, report, service, timed
from zerodb.v1 import common_pb2, memory_pb2, memory_pb2_grpc
from zerodb_batch.domain.memory_update import UpdateColumns
from zerodb_batch.storage import memories
from zerodb_batch.storage.queries import Q

BATCH = 500
Conn = psycopg.Connection[tuple[object, ...]]
Stub = memory_pb2_grpc.MemoryServiceStub
View = common_pb2.ResultView.ValueType
FULL, FAILURES = common_pb2.RESULT_VIEW_FULL, common_pb2.RESULT_VIEW_FAILURES


def seed(conn: Conn, project_id: str, prefix: str, count: int) -> list[list[str]]:
    """`count` memories by COPY, returned as batches of ids."""
    ids = [f"{prefix}-{i:07d}" for i in range(count)]
    with (
        conn.transaction(),
        conn.cursor().copy(
            "COPY memories (project_id, id, content, memory_type, importance) FROM STDIN"
        ) as copy,
    ):
        for memory_id in ids:
            copy.write_row((project_id, memory_id, "fact " + "x" * 190, "semantic", 0.5))
    return [ids[i : i + BATCH] for i in range(0, count, BATCH)]


def tags(n: int) -> list[str]:
    return ["bench", "updated", f"t{n % 7}"]


def update_request(
    project_id: str, ids: list[str], view: View
) -> memory_pb2.BatchUpdateMemoriesRequest:
    return memory_pb2.BatchUpdateMemoriesRequest(
        project_id=project_id,
        result_view=view,
        updates=[
            memory_pb2.MemoryUpdate(id=i, importance=0.9, tags=tags(n)) for n, i in enumerate(ids)
        ],
    )


def update_params(project_id: str, ids: list[str]) -> dict[str, object]:
    """memory_update's parameters for the same change, built by the service's own store code."""
    changes: list[dict[str, object]] = [
        {"importance": 0.9, "tags": tags(n)} for n in range(len(ids))
    ]
    rows = UpdateColumns(index=list(range(len(ids))), ids=ids, changes=changes)
    return memories.update_params(project_id, rows)


def service_updates(
    stub: Stub, project_id: str, key: str, work: list[list[str]], view: View = FULL
) -> float:
    def run() -> None:
        for ids in work:  # the request is built inside the timing, as a client would
            reply = stub.BatchUpdateMemories(
                update_request(project_id, ids, view), metadata=(("x-api-key", key),)
            )
            assert reply.updated == len(ids)

    return len(work) / timed(run)


def raw_updates(conn: Conn, project_id: str, work: list[list[str]]) -> float:
    def run() -> None:
        for ids in work:
            with conn.transaction():
                missing = conn.execute(Q["memory_update"], update_params(project_id, ids))
                assert missing.fetchone() == ([],)

    return len(work) / timed(run)


def service_deletes(
    stub: Stub, project_id: str, key: str, work: list[list[str]], view: View
) -> float:
    def run() -> None:
        for ids in work:
            request = memory_pb2.BatchDeleteMemoriesRequest(
                project_id=project_id, ids=ids, result_view=view
            )
            reply = stub.BatchDeleteMemories(request, metadata=(("x-api-key", key),))
            assert reply.deleted == len(ids)

    return len(work) / timed(run)


def raw_deletes(conn: Conn, project_id: str, work: list[list[str]]) -> float:
    def run() -> None:
        for ids in work:
            with conn.transaction():
                params = {"project_id": project_id, "ids": ids}
                assert conn.execute(Q["memory_delete"], params).fetchone() == ([],)

    return len(work) / timed(run)


def rounds(count: int, one: Callable[[int], tuple[float, ...]]) -> list[list[float]]:
    """Per side, its rate in each of `count` rounds of `one` (round n -> a rate per side)."""
    return [list(side) for side in zip(*(one(n) for n in range(count)), strict=True)]


def report_views(title: str, full: list[float], failures: list[float], raw: list[float]) -> None:
    report(title, "calls/s", full, raw)
    report(title + ", result_view FAILURES", "calls/s", failures, raw)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--calls", type=int, default=40, help="calls per round")
    args.add_argument("--rounds", type=int, default=5)
    opts = args.parse_args()
    size = opts.calls * BATCH
    with (
        backends() as (db_url, redis_url),
        service(db_url, redis_url) as svc,
        grpc.insecure_channel(svc.address) as channel,
        psycopg.connect(db_url, autocommit=True) as conn,
    ):
        stub, key, ours_p, raw_p = Stub(channel), svc.api_key, svc.project_id, "raw"
        ours_ids, raw_ids = seed(conn, ours_p, "m", size), seed(conn, raw_p, "m", size)
        service_updates(stub, ours_p, key, ours_ids[:3])  # warm-up
        raw_updates(conn, raw_p, raw_ids[:3])
        conn.execute("ANALYZE memories")
        full, failures, raw = rounds(
            opts.rounds,
            lambda _: (
                service_updates(stub, ours_p, key, ours_ids),
                service_updates(stub, ours_p, key, ours_ids, FAILURES),
                raw_updates(conn, raw_p, raw_ids),
            ),
        )
        report_views(f"BatchUpdateMemories, {BATCH} updates a call", full, failures, raw)

        def delete_round(n: int) -> tuple[float, float, float]:
            # fresh rows each round, seeded outside the timing
            mine = [seed(conn, ours_p, f"d{n}{view}", size) for view in (FULL, FAILURES)]
            theirs = seed(conn, raw_p, f"d{n}", size)
            return (
                service_deletes(stub, ours_p, key, mine[0], FULL),
                service_deletes(stub, ours_p, key, mine[1], FAILURES),
                raw_deletes(conn, raw_p, theirs),
            )

        full, failures, raw = rounds(opts.rounds, delete_round)
        report_views(f"BatchDeleteMemories, {BATCH} ids a call", full, failures, raw)


if __name__ == "__main__":
    main()
