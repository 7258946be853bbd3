"""GET /metrics after real calls: counters and histograms move, with the labels they promise.

The session's server is shared with other tests, so these compare a scrape before their calls
with one after; servers of their own check the settings (the project label, a listener of its
own, metrics off).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import requests

from tests.api.test_memory_stream import chunk, stream
from tests.plugins.events import Subscription, make_events, own_server, publish
from tests.plugins.http import door_of
from tests.plugins.metrics import Scrape, rpc, scrape, scrape_until
from tests.plugins.server import Project, ServerThread
from tests.plugins.services import Backends
from zerodb.v1 import memory_pb2
from zerodb.v1.event_pb2_grpc import EventServiceStub
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub
from zerodb_batch.config import Observability

UPSERT = rpc("MemoryService/BatchUpsertMemories")
STREAM = rpc("MemoryService/StreamUpsertMemories")


def upsert(stub: MemoryServiceStub, project: Project, *records: memory_pb2.Memory, **kw: object
           ) -> memory_pb2.BatchUpsertMemoriesResponse:  # fmt: skip
    request = memory_pb2.BatchUpsertMemoriesRequest(project_id=project.id, records=records, **kw)
    return stub.BatchUpsertMemories(request, metadata=project.auth)


def growth(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def test_calls_count_by_code_with_latency_sizes_and_item_outcomes(
    server: ServerThread, memories: MemoryServiceStub, project: Project
) -> None:
    assert server.http is not None
    before = scrape(server.http)
    good, bad = memory_pb2.Memory(content="kept"), memory_pb2.Memory(importance=7)
    upsert(memories, project, good, good)
    reply = upsert(memories, project, good, bad, good, partial_success=True)
    assert (reply.inserted, reply.failed) == (2, 1)
    with pytest.raises(grpc.RpcError):
        upsert(memories, project, bad)  # atomic: INVALID_ARGUMENT, nothing written
    with pytest.raises(grpc.RpcError):
        upsert(memories, Project(project.id, "zdb_not-a-key"), good)
    assert door_of(server, project).post("/memory/batch/upsert", {"records": [{"content": "h"}]}
                                         ).status_code == 200  # fmt: skip
    after = scrape(server.http)

    assert growth(before, after, "zerodb_rpc_calls_total", **UPSERT, code="OK") == 3
    assert growth(before, after, "zerodb_rpc_calls_total", **UPSERT, code="INVALID_ARGUMENT") == 1
    assert growth(before, after, "zerodb_rpc_calls_total", **UPSERT, code="UNAUTHENTICATED") == 1
    latency = "zerodb_rpc_duration_seconds_count"
    assert growth(before, after, latency, **UPSERT, code="OK") == 3
    assert growth(before, after, "zerodb_rpc_duration_seconds_bucket", **UPSERT, code="OK",
                  le="+Inf") == 3  # fmt: skip
    assert growth(before, after, "zerodb_rpc_request_bytes_count", **UPSERT) == 5
    assert growth(before, after, "zerodb_rpc_request_bytes_sum", **UPSERT) > 0
    # Replies only for the calls that succeeded; a refused call sends no message.
    assert growth(before, after, "zerodb_rpc_response_bytes_count", **UPSERT) == 3
    items = "zerodb_rpc_items_total"
    assert growth(before, after, items, **UPSERT, outcome="inserted") == 2 + 2 + 1
    assert growth(before, after, items, **UPSERT, outcome="failed") == 1
    assert growth(before, after, "zerodb_rpc_batch_items_count", **UPSERT) == 3
    assert growth(before, after, "zerodb_rpc_batch_items_sum", **UPSERT) == 2 + 3 + 1
    assert after.value("zerodb_rpc_in_flight", **UPSERT) == 0
    assert project.id not in after.text, "no project id is a label unless asked for"


def test_streamed_loads_count_chunks_records_and_resent_duplicates(
    server: ServerThread, memories: MemoryServiceStub, project: Project
) -> None:
    assert server.http is not None
    before = scrape(server.http)
    stream(memories, project, [chunk(project, 0), chunk(project, 1, n=3)])
    stream(memories, project, [chunk(project, 1, n=3), chunk(project, 2, n=2)])  # a resume
    after = scrape(server.http)

    kind = {"kind": "memories"}
    assert growth(before, after, "zerodb_load_chunks_committed_total", **kind) == 3
    assert growth(before, after, "zerodb_load_records_committed_total", **kind) == 4 + 3 + 2
    assert growth(before, after, "zerodb_load_chunks_skipped_total", **kind) == 1
    assert after.value("zerodb_load_streams_running", **kind) == 0
    assert growth(before, after, "zerodb_rpc_calls_total", **STREAM, code="OK") == 2
    assert growth(before, after, "zerodb_rpc_request_bytes_count", **STREAM) == 4  # messages


def test_open_subscriptions_and_the_pending_entries_of_a_consumer_group(
    server: ServerThread, channel: grpc.Channel, project: Project
) -> None:
    assert server.http is not None
    stub = EventServiceStub(channel)
    before = scrape(server.http)
    group = Subscription(stub, project, consumer_group="workers", consumer_name="w1")
    try:
        group.established()
        publish(stub, project, make_events(3))
        group.events(3)  # delivered, never acknowledged
        during = scrape_until(
            server.http, "the group's pending entries",
            lambda s: s.value("zerodb_event_group_pending_max") >= 3,
        )  # fmt: skip
        assert growth(before, during, "zerodb_event_subscriptions_open", mode="group") == 1
    finally:
        group.cancel()
    opened = before.value("zerodb_event_subscriptions_open", mode="group")
    scrape_until(
        server.http, "the subscription closed",
        lambda s: s.value("zerodb_event_subscriptions_open", mode="group") == opened,
    )  # fmt: skip


def test_pools_health_and_process_are_there(server: ServerThread) -> None:
    assert server.http is not None
    found = scrape(server.http)
    assert found.value("zerodb_db_pool_max") == server.app.settings.pool_max
    assert found.has("zerodb_db_pool_connections", state="idle")
    assert found.has("zerodb_db_pool_connections", state="in_use")
    assert found.value("zerodb_db_pool_requests_total") > 0
    assert found.has("zerodb_db_pool_wait_seconds_total")
    assert found.value("zerodb_redis_pool_max", pool="publish") == 16
    assert found.value("zerodb_dependency_up", dependency="postgres") == 1
    assert found.value("zerodb_dependency_up", dependency="redis") == 1
    assert found.value("process_resident_memory_bytes") > 0
    assert found.has("process_cpu_seconds_total")
    assert found.value("process_open_fds") > 0


@pytest.fixture
def labelled(database_url: str, backends: Backends) -> Iterator[ServerThread]:
    settings = Observability(metrics_project_label=True)
    with own_server(database_url, backends.redis_url, observability=settings) as running:
        yield running


def test_the_project_label_when_asked_for(labelled: ServerThread) -> None:
    assert labelled.http is not None
    project = Project(*labelled.new_key())
    with grpc.insecure_channel(labelled.address) as channel:
        upsert(MemoryServiceStub(channel), project, memory_pb2.Memory(content="x"))
    found = scrape(labelled.http)
    assert found.value("zerodb_rpc_calls_total", **UPSERT, code="OK", project=project.id) == 1
    assert found.value("zerodb_rpc_items_total", **UPSERT, project=project.id) == 1
    # Latency stays per method and code: a histogram per project would cost 20 series each.
    assert all(
        "project" not in s.labels for s in found.matching("zerodb_rpc_duration_seconds_count")
    )


def test_a_listener_of_its_own_when_the_door_is_off(database_url: str, backends: Backends) -> None:
    settings = Observability(metrics_listen="127.0.0.1:0")
    with own_server(
        database_url, backends.redis_url, http_listen="off", observability=settings
    ) as running:
        assert running.http is None and running.app.metrics_port
        found = scrape(f"http://127.0.0.1:{running.app.metrics_port}")
        assert found.value("zerodb_dependency_up", dependency="postgres") == 1


def test_metrics_off_serves_no_metrics(database_url: str, backends: Backends) -> None:
    settings = Observability(metrics=False)
    with own_server(database_url, backends.redis_url, observability=settings) as running:
        assert requests.get(f"{running.http}/metrics", timeout=10).status_code == 404
