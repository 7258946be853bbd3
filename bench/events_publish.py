"""BatchPublishEvents (100 events a call, concurrent callers) vs the raw outbox path, and latency.

The raw path is what a hand-written publisher does: the same numbered INSERT through psycopg,
commit, a pipelined XADD of the 100 events through redis-py (ids chosen by Redis: with several
callers on one stream, ids of their own would arrive out of order), then the same "mark relayed"
UPDATE. It writes to a database of its own on the same server, so that the service's relay loop
does not take its rows for pending events of the service.

Two layouts: every caller publishing to one project (the service then keeps the project's events
in order in its stream, one relayer at a time), and each caller to a project of its own. Rounds
alternate between the two paths; medians print with their ratio. Then events are published one
per call at a steady rate while a subscriber receives them: publish-to-subscriber latency p50/p99,
through SubscribeEvents and, for the raw path, with XREAD.

    python -m bench.events_publish [--callers 4] [--calls 25] [--rounds 5] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.harness import Service, backends, report, service, timed
from zerodb.v1 import event_pb2, event_pb2_grpc
from zerodb_batch.storage import keys
from zerodb_batch.storage.migrate import migrate
from zerodb_batch.storage.queries import Q

BATCH = 100
MAXLEN = 100_000  # the service's default retention, used by the raw path too

Caller = tuple[str, str]  # (project_id, api_key)


def payloads(call: int) -> list[dict[str, object]]:
    return [
        {"agent": "agent-7", "task": f"t-{call}-{n}", "status": "completed", "score": 0.93,
         "detail": "x" * 120}
        for n in range(BATCH)
    ]  # fmt: skip


def to_request(project_id: str, call: int) -> event_pb2.BatchPublishEventsRequest:
    request = event_pb2.BatchPublishEventsRequest(project_id=project_id)
    for p in payloads(call):
        request.events.add(topic="agent.task.completed").event_payload.update(p)
    return request


class RawPublisher:
    """One caller of the raw path, with its own PostgreSQL connection and Redis client."""

    def __init__(self, db_url: str, redis_url: str, project_id: str) -> None:
        self.conn = psycopg.connect(db_url, autocommit=True)
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.project_id = project_id
        self.key = f"zerodb:{{{project_id}}}:events"

    def publish(self, events: list[dict[str, object]], topic: str = "agent.task.completed") -> None:
        texts = [json.dumps(p, separators=(",", ":")) for p in events]
        params = {"project_id": self.project_id, "count": len(texts),
                  "topics": [topic] * len(texts), "payloads": texts}  # fmt: skip
        with self.conn.transaction():
            rows = sorted(self.conn.execute(Q["event_insert"], params).fetchall())
        pipe = self.redis.pipeline(transaction=False)
        for (_, event_id, when), text in zip(rows, texts, strict=True):
            fields = {"event_id": str(event_id), "topic": topic, "payload": text,
                      "published_at": when.isoformat()}  # fmt: skip
            pipe.xadd(self.key, fields, maxlen=MAXLEN)
        pipe.execute()
        self.conn.execute(
            Q["event_mark_relayed"],
            {"project_id": self.project_id, "first": rows[0][0], "last": rows[-1][0]},
        )

    def close(self) -> None:
        self.conn.close()
        self.redis.close()


def concurrently(callers: int, work: Callable[[int], None]) -> None:
    with ThreadPoolExecutor(callers) as pool:
        for future in [pool.submit(work, k) for k in range(callers)]:
            future.result()


def service_round(channel: grpc.Channel, callers: list[Caller], calls: int) -> float:
    stub = event_pb2_grpc.EventServiceStub(channel)

    def caller(k: int) -> None:
        project_id, key = callers[k]
        for c in range(calls):  # the request is built inside the timing, as a client would
            request = to_request(project_id, k * calls + c)
            reply = stub.BatchPublishEvents(request, metadata=(("x-api-key", key),))
            assert reply.published == BATCH and reply.pending_relay == 0

    return len(callers) * calls * BATCH / timed(lambda: concurrently(len(callers), caller))


def raw_round(raw: list[RawPublisher], calls: int) -> float:
    def caller(k: int) -> None:
        for c in range(calls):
            raw[k].publish(payloads(k * calls + c))

    return len(raw) * calls * BATCH / timed(lambda: concurrently(len(raw), caller))


def raw_database(database_url: str, name: str = "zerodb_raw") -> str:
    """A second database on the service's PostgreSQL, with the same schema."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(database_url, dbname=name)

    async def apply() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)

    asyncio.run(apply())
    return url


def new_projects(database_url: str, count: int) -> list[Caller]:
    async def make() -> list[Caller]:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            made = []
            for _ in range(count):
                project = await keys.create_project(conn)
                made.append((project, (await keys.create_key(conn, project))[1]))
            return made

    return asyncio.run(make())


def throughput(
    channel: grpc.Channel, callers: list[Caller], raw: list[RawPublisher], opts: argparse.Namespace
) -> tuple[list[float], list[float]]:
    service_round(channel, callers, 3)  # warm-up
    raw_round(raw, 3)
    ours, theirs = [], []
    for _ in range(opts.rounds):
        ours.append(service_round(channel, callers, opts.calls))
        theirs.append(raw_round(raw, opts.calls))
    return ours, theirs


def layouts(svc: Service, channel: grpc.Channel, raw_url: str, opts: argparse.Namespace) -> None:
    shared = str(uuid.uuid4())
    for title, callers, raw_projects in (
        ("one project", [(svc.project_id, svc.api_key)] * opts.callers, [shared] * opts.callers),
        ("a project each", new_projects(svc.database_url, opts.callers),
         [str(uuid.uuid4()) for _ in range(opts.callers)]),
    ):  # fmt: skip
        raw = [RawPublisher(raw_url, svc.redis_url, p) for p in raw_projects]
        try:
            ours, theirs = throughput(channel, callers, raw, opts)
        finally:
            for r in raw:
                r.close()
        report(
            f"BatchPublishEvents, {BATCH} events a call, {opts.callers} concurrent callers, "
            f"{title}",
            "events/s",
            ours,
            theirs,
        )


def steady(rate: float, seconds: float, send: Callable[[int], None]) -> None:
    """Call send(n) `rate` times a second for `seconds`, on a fixed schedule."""
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        send(n)


def service_latency(
    svc: Service, channel: grpc.Channel, rate: float, seconds: float
) -> list[float]:
    stub = event_pb2_grpc.EventServiceStub(channel)
    auth = (("x-api-key", svc.api_key),)
    sent: dict[str, float] = {}
    received: list[float] = []
    total = int(rate * seconds)
    call = stub.SubscribeEvents(
        event_pb2.SubscribeEventsRequest(project_id=svc.project_id, topics=["bench.latency"]),
        metadata=auth,
    )
    ready = threading.Event()

    def read() -> None:
        for message in call:
            if message.HasField("heartbeat"):
                ready.set()
                continue
            received.append(time.perf_counter() - sent[message.event.event_payload["k"]])
            if len(received) == total:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready.wait(30)

    def send(n: int) -> None:
        request = event_pb2.BatchPublishEventsRequest(project_id=svc.project_id)
        request.events.add(topic="bench.latency").event_payload.update({"k": str(n)})
        sent[str(n)] = time.perf_counter()
        stub.BatchPublishEvents(request, metadata=auth)

    steady(rate, seconds, send)
    reader.join(30)
    call.cancel()
    return received


def raw_latency(svc: Service, raw_url: str, rate: float, seconds: float) -> list[float]:
    raw = RawPublisher(raw_url, svc.redis_url, str(uuid.uuid4()))
    sent: dict[str, float] = {}
    received: list[float] = []
    total = int(rate * seconds)

    def read() -> None:
        with redis.Redis.from_url(svc.redis_url, decode_responses=True) as client:
            last = "$"
            while len(received) < total:
                for _, entries in client.xread({raw.key: last}, count=100, block=1000) or ():
                    for entry_id, fields in entries:
                        k = json.loads(fields["payload"])["k"]
                        received.append(time.perf_counter() - sent[k])
                        last = entry_id

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.2)  # let the reader block on XREAD before the first event

    def send(n: int) -> None:
        sent[str(n)] = time.perf_counter()
        raw.publish([{"k": str(n)}], topic="bench.latency")

    try:
        steady(rate, seconds, send)
        reader.join(30)
    finally:
        raw.close()
    return received


def print_latency(title: str, samples: list[float]) -> None:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"  {title}: p50 {statistics.median(ms):6.2f} ms   p99 {p99:6.2f} ms   ({len(ms)} events)"
    )


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--callers", type=int, default=4, help="concurrent publishers")
    args.add_argument("--calls", type=int, default=20, help="calls per caller per round")
    args.add_argument("--rounds", type=int, default=5)
    args.add_argument("--rate", type=float, default=100, help="events/s for the latency run")
    args.add_argument("--seconds", type=float, default=5, help="length of the latency run")
    opts = args.parse_args()
    with backends() as (db_url, redis_url), service(db_url, redis_url) as svc, \
            grpc.insecure_channel(svc.address) as channel:  # fmt: skip
        raw_url = raw_database(db_url)
        layouts(svc, channel, raw_url, opts)
        print(f"publish-to-subscriber latency, one event a call, {opts.rate:g} events/s")
        service_samples = service_latency(svc, channel, opts.rate, opts.seconds)
        print_latency("service (SubscribeEvents)", service_samples)
        print_latency(
            "raw (XREAD)              ", raw_latency(svc, raw_url, opts.rate, opts.seconds)
        )


if __name__ == "__main__":
    main()
