"""Events replayed from PostgreSQL (the stream trimmed them): a consumer group, whose replayed
events are written into its PostgreSQL pending list before they go out, against a tail reading
the same events without that bookkeeping. Same server, same events, rounds alternating.

    python -m bench.events_group_replay [--events 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse

import grpc

from bench.harness import backends, report, service, timed
from zerodb.v1 import event_pb2, event_pb2_grpc


def publish(stub: event_pb2_grpc.EventServiceStub, auth: list[tuple[str, str]], project: str,
            count: int) -> None:  # fmt: skip
    for first in range(0, count, 100):
        request = event_pb2.BatchPublishEventsRequest(project_id=project)
        for n in range(first, min(first + 100, count)):
            request.events.add(topic="agent.task.done").event_payload.update(
                {"n": n, "x": "y" * 100}
            )
        stub.BatchPublishEvents(request, metadata=auth)


def read_all(stub: event_pb2_grpc.EventServiceStub, auth: list[tuple[str, str]],
             request: event_pb2.SubscribeEventsRequest, count: int) -> None:  # fmt: skip
    """Read `count` events; a group consumer acknowledges each 100 (it would stop at its
    max_unacked otherwise)."""
    call = stub.SubscribeEvents(request, metadata=auth)
    got, unacked = 0, []
    for message in call:
        if not message.HasField("event"):
            continue
        got += 1
        unacked.append(message.event.stream_id)
        if request.consumer_group and (len(unacked) == 100 or got == count):
            ack = event_pb2.AckEventsRequest(
                project_id=request.project_id, consumer_group=request.consumer_group,
                stream_ids=unacked,
            )  # fmt: skip
            stub.AckEvents(ack, metadata=auth)
            unacked = []
        if got == count:
            break
    call.cancel()


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--events", type=int, default=10_000)
    args.add_argument("--rounds", type=int, default=3)
    opts = args.parse_args()
    groups, tails = [], []
    with (
        backends() as (db_url, redis_url),
        service(db_url, redis_url, ZERODB_EVENT_STREAM_MAXLEN="100") as svc,
        grpc.insecure_channel(svc.address) as channel,
    ):
        stub = event_pb2_grpc.EventServiceStub(channel)
        auth = [("x-api-key", svc.api_key)]
        publish(stub, auth, svc.project_id, opts.events)
        for r in range(opts.rounds):
            tail = event_pb2.SubscribeEventsRequest(
                project_id=svc.project_id, start_after_stream_id="0"
            )
            group = event_pb2.SubscribeEventsRequest(
                project_id=svc.project_id, start_after_stream_id="0",
                consumer_group=f"g{r}", consumer_name="c",
            )  # fmt: skip
            for request, rates in ((tail, tails), (group, groups)):
                seconds = timed(lambda r=request: read_all(stub, auth, r, opts.events))  # type: ignore[misc]
                rates.append(opts.events / seconds)
    report(f"{opts.events} events replayed from PostgreSQL", "events/s", groups, tails,
           names=("group (tracked)", "tail"))  # fmt: skip


if __name__ == "__main__":
    main()
