"""The seed's 500-record memory upsert over HTTP/JSON (the door) vs the same call over gRPC.

Both go to one server process with the same records (the seed's record shape: content,
memory_type, importance, tags). The HTTP side sends prepared JSON bytes over one keep-alive
connection (http.client, so that the client's own cost stays small); the gRPC side sends prepared
protobuf messages on one channel. Rounds alternate; calls/s, p50 and p99 print side by side.

    python -m bench.http [--calls 40] [--rounds 5] [--records 500]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import time
from collections.abc import Callable

import grpc

from bench.harness import backends, free_port, record, service
from zerodb.v1 import memory_pb2, memory_pb2_grpc


def seed_records(call: int, count: int) -> list[dict[str, object]]:
    return [
        {
            "content": f"User prefers concise responses #{call}/{n} " + "x" * 60,
            "memory_type": "semantic",
            "importance": 0.8,
            "tags": ["preference", "communication"],
        }
        for n in range(count)
    ]


def http_round(
    address: str, project: str, key: str, bodies: list[bytes]
) -> Callable[[], list[float]]:
    host, port = address.rsplit(":", 1)
    path = f"/api/v1/projects/{project}/database/memory/batch/upsert"
    headers = {"x-api-key": key, "Content-Type": "application/json"}

    def run() -> list[float]:
        connection = http.client.HTTPConnection(host, int(port))
        times = []
        for body in bodies:
            start = time.perf_counter()
            connection.request("POST", path, body, headers)
            reply = connection.getresponse()
            data = reply.read()
            times.append(time.perf_counter() - start)
            assert reply.status == 200, data[:500]
        connection.close()
        return times

    return run


def grpc_round(
    stub: memory_pb2_grpc.MemoryServiceStub,
    key: str,
    requests: list[memory_pb2.BatchUpsertMemoriesRequest],
) -> Callable[[], list[float]]:
    def run() -> list[float]:
        times = []
        for request in requests:
            start = time.perf_counter()
            stub.BatchUpsertMemories(request, metadata=(("x-api-key", key),))
            times.append(time.perf_counter() - start)
        return times

    return run


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(name: str, rounds: list[list[float]]) -> float:
    rates = [len(r) / sum(r) for r in rounds]
    every = [t for r in rounds for t in r]
    rate = statistics.median(rates)
    print(
        f"  {name:5} {rate:8.1f} calls/s   p50 {percentile(every, 0.5) * 1000:6.1f} ms   "
        f"p99 {percentile(every, 0.99) * 1000:6.1f} ms   (rounds: "
        + ", ".join(f"{x:.0f}" for x in rates)
        + ")"
    )
    return rate


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--calls", type=int, default=40, help="calls per round")
    args.add_argument("--rounds", type=int, default=5)
    args.add_argument("--records", type=int, default=500)
    opts = args.parse_args()
    http_address = f"127.0.0.1:{free_port()}"
    with (
        backends() as (db_url, redis_url),
        service(db_url, redis_url, ZERODB_HTTP_LISTEN=http_address) as svc,
        grpc.insecure_channel(svc.address) as channel,
    ):
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        # Inputs are prepared before the clock starts: JSON bytes and protobuf messages.
        batches = [seed_records(c, opts.records) for c in range(opts.calls)]
        bodies = [json.dumps({"records": b}).encode() for b in batches]
        requests = [
            memory_pb2.BatchUpsertMemoriesRequest(project_id=svc.project_id, records=b)
            for b in batches
        ]
        over_http = http_round(http_address, svc.project_id, svc.api_key, bodies)
        over_grpc = grpc_round(stub, svc.api_key, requests)
        over_http(), over_grpc()  # warm-up: connections, prepared statements
        http_times, grpc_times = [], []
        for _ in range(opts.rounds):
            http_times.append(over_http())
            grpc_times.append(over_grpc())
        print(f"BatchUpsertMemories, {opts.records} seed records, {opts.calls} calls a round")
        h = summary("HTTP", http_times)
        g = summary("gRPC", grpc_times)
        print(f"  ratio HTTP/gRPC: {h / g:.2f}")
        record({"title": f"BatchUpsertMemories of {opts.records} seed records, HTTP/JSON vs gRPC",
                "unit": "calls/s", "names": ("HTTP", "gRPC"), "ours": h, "raw": g,
                "ratio": h / g})  # fmt: skip


if __name__ == "__main__":
    main()
