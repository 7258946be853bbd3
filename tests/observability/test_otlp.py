"""Traces turned on the standard way: `serve` with OTEL_TRACES_EXPORTER=otlp and the OTLP endpoint
of a collector (here a real OTLP/gRPC TraceService in the test) receives the call's spans."""

from __future__ import annotations

import queue
import secrets
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.plugins.serve import Serve, free_port, serve_env
from tests.plugins.services import Backends
from zerodb.v1 import memory_pb2
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub

Export = trace_service_pb2.ExportTraceServiceRequest


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every export it receives."""

    def __init__(self) -> None:
        self.exports: queue.Queue[Export] = queue.Queue()

    def Export(self, request: Export, context: grpc.ServicerContext) -> object:
        self.exports.put(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(2))
    found = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(found, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield found, port
    server.stop(0)


def test_otlp_exporter_sends_the_calls_spans_to_the_collector(
    collector: tuple[Collector, int], own_database: str, backends: Backends, data_dir: Path
) -> None:
    found, port = collector
    trace_id = secrets.token_hex(16)
    env = serve_env(
        data_dir, f"127.0.0.1:{free_port()}", ZERODB_DATABASE_URL=own_database,
        ZERODB_REDIS_URL=backends.redis_url, OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}", OTEL_BSP_SCHEDULE_DELAY="100",
    )  # fmt: skip
    serve = Serve(env)
    try:
        address = serve.wait_for(r"serving on (\S+)")[1]
        project, key = serve.wait_for(r"project_id: (\S+)")[1], serve.wait_for(r"api_key: (\S+)")[1]
        request = memory_pb2.BatchUpsertMemoriesRequest(
            project_id=project, records=[memory_pb2.Memory(content="exported")]
        )
        metadata = (("x-api-key", key), ("traceparent", f"00-{trace_id}-{'1' * 16}-01"))
        with grpc.insecure_channel(address) as channel:
            MemoryServiceStub(channel).BatchUpsertMemories(request, metadata=metadata)
        spans, service = [], ""
        while not any(s.kind == s.SPAN_KIND_SERVER for s in spans):
            export = found.exports.get(timeout=30)
            for resource in export.resource_spans:
                names = [a.value.string_value for a in resource.resource.attributes
                         if a.key == "service.name"]  # fmt: skip
                service = names[0] if names else service
                for scope in resource.scope_spans:
                    spans += [s for s in scope.spans if s.trace_id.hex() == trace_id]
    finally:
        assert serve.stop() == 0
    (rpc,) = [s for s in spans if s.kind == s.SPAN_KIND_SERVER]
    assert rpc.name == "zerodb.v1.MemoryService/BatchUpsertMemories"
    assert rpc.parent_span_id.hex() == "1" * 16
    assert service == "zerodb-batch"
