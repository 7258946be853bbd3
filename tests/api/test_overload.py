"""Overload: past the server's cap of concurrent calls, or a project's calls per second, a call is
refused at once with RESOURCE_EXHAUSTED and RetryInfo, never left to time out; health checks
are never refused; a Redis that cannot be reached turns the rate limit off (fails open)."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import grpc
import pytest
import redis
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from tests.plugins.checks import details, wait_for
from tests.plugins.events import own_server
from tests.plugins.http import door_of, error_of
from tests.plugins.server import Project
from tests.plugins.services import Backends
from zerodb.v1 import memory_pb2, memory_pb2_grpc

STREAM = "/zerodb.v1.MemoryService/StreamUpsertMemories"


def retry_delay(err: grpc.RpcError) -> float:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToMilliseconds()) / 1000
    pytest.fail("no RetryInfo in the status")


def list_memories(channel: grpc.Channel, project: Project) -> None:
    memory_pb2_grpc.MemoryServiceStub(channel).ListMemories(
        memory_pb2.ListMemoriesRequest(project_id=project.id), metadata=project.auth, timeout=10
    )


def held_stream(
    channel: grpc.Channel, project: Project
) -> tuple[queue.Queue[bytes | None], grpc.Future]:  # type: ignore[type-arg]
    """A streamed load that holds its call open until the test puts a chunk (then None)."""
    chunks: queue.Queue[bytes | None] = queue.Queue()

    def sent() -> Iterator[bytes]:
        while (chunk := chunks.get()) is not None:
            yield chunk

    future = channel.stream_unary(STREAM).future(sent(), metadata=project.auth, timeout=60)
    return chunks, future


def test_past_the_cap_of_concurrent_calls_is_resource_exhausted_with_retry_info(
    database_url: str, backends: Backends
) -> None:
    with (
        own_server(database_url, backends.redis_url, max_concurrent_calls=2) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        project = Project(*server.new_key())
        admission = server.app.admission
        assert admission is not None
        held = [held_stream(channel, project) for _ in range(2)]
        wait_for(lambda: admission.running == 2, "both loads to hold their slots")

        with pytest.raises(grpc.RpcError) as caught:
            list_memories(channel, project)
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        info, _ = details(caught.value)
        assert (info.reason, info.metadata["max_concurrent_calls"]) == ("SERVER_BUSY", "2")
        assert 0 < retry_delay(caught.value) <= 1
        # Health is never refused: a busy server is not a dead one.
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        for n, (chunks, future) in enumerate(held):
            request = memory_pb2.StreamUpsertMemoriesRequest(
                project_id=project.id, load_id=f"held-{n}", records=[{"content": "c"}]
            )
            chunks.put(request.SerializeToString())
            chunks.put(None)
            assert future.result(timeout=30)  # the held calls were never disturbed
        wait_for(lambda: admission.running == 0, "the slots to be given back")
        list_memories(channel, project)  # room again


@pytest.fixture
def redis_client(backends: Backends) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(backends.redis_url, decode_responses=True) as client:
        yield client


def test_a_project_past_its_rate_is_refused_on_every_server_others_are_not(
    database_url: str, backends: Backends, redis_client: redis.Redis
) -> None:
    limit = 3
    with (
        own_server(database_url, backends.redis_url, project_calls_per_second=limit) as one,
        own_server(database_url, backends.redis_url, project_calls_per_second=limit) as two,
        grpc.insecure_channel(one.address) as first,
        grpc.insecure_channel(two.address) as second,
    ):
        busy, quiet = Project(*one.new_key()), Project(*one.new_key())
        refused: list[grpc.RpcError] = []
        for n in range(4 * limit):
            try:
                list_memories((first, second)[n % 2], busy)
            except grpc.RpcError as e:
                refused.append(e)
        assert refused, "a project past its rate is refused"
        for err in refused:
            assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert details(err)[0].reason == "RATE_LIMITED"
            assert 0 < retry_delay(err) <= 1
        # Both servers counted into the same windows in Redis (every call, allowed or not).
        counted = [int(redis_client.get(k) or 0) for k in redis_client.scan_iter(
            f"zerodb:{{{busy.id}}}:calls:*")]  # fmt: skip
        assert sum(counted) == 4 * limit
        list_memories(first, quiet)  # another project has a budget of its own


def test_the_rate_limit_fails_open_when_redis_is_unreachable(
    database_url: str, backends: Backends
) -> None:
    """Availability over limiting: with no Redis to count in, calls go on unlimited."""
    nowhere = "redis://127.0.0.1:1/0"  # port 1: refused at once
    with (
        own_server(database_url, nowhere, project_calls_per_second=1) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        project = Project(*server.new_key())
        for _ in range(5):
            list_memories(channel, project)


def test_over_http_a_refusal_is_429_with_retry_after(database_url: str, backends: Backends) -> None:
    with own_server(database_url, backends.redis_url, project_calls_per_second=1) as server:
        door = door_of(server, Project(*server.new_key()))
        replies = [door.get("/memory") for _ in range(6)]
        refused = [r for r in replies if r.status_code != 200]
        assert refused, "six calls at one a second: some are refused"
        for reply in refused:
            error = error_of(reply, 429, "RESOURCE_EXHAUSTED")
            assert error["by_type"]["ErrorInfo"]["reason"] == "RATE_LIMITED"
            assert "RetryInfo" in error["by_type"]
            assert reply.headers["Retry-After"] == "1"
