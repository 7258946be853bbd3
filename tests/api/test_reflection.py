"""Server reflection on `grpc.reflection.v1` and `grpc.reflection.v1alpha`, with real clients.

v1alpha through grpcio-reflection's own client (a descriptor database), v1 through a raw call
on its method path with messages that are, field for field, v1's (grpcurl 1.8.6 speaks only
v1alpha; the Node interop test speaks v1 with @grpc/reflection's own proto).
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.plugins.serve import grpcurl
from tests.plugins.server import ServerThread

OURS = {
    "zerodb.v1.MemoryService",
    "zerodb.v1.EventService",
    "zerodb.v1.LoadService",
    "zerodb.v1.TableService",
    "zerodb.v1.VectorService",
    "zerodb.v1.RlhfService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
}


def ask(
    channel: grpc.Channel, version: str, *requests: reflection_pb2.ServerReflectionRequest
) -> list[reflection_pb2.ServerReflectionResponse]:
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return list(call(iter(requests), timeout=30))


def test_v1alpha_with_grpcio_reflection_client(channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    assert set(database.get_services()) >= OURS
    found = database.FindFileContainingSymbol("zerodb.v1.MemoryService")
    assert found.name == "zerodb/v1/memory.proto"


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_both_versions_list_and_describe(channel: grpc.Channel, version: str) -> None:
    listed, described, itself = ask(
        channel,
        version,
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="zerodb.v1.EventService"),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol=f"grpc.reflection.{version}.ServerReflection"
        ),
    )
    assert {s.name for s in listed.list_services_response.service} >= OURS
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    assert "zerodb/v1/event.proto" in {f.name for f in files}
    own = descriptor_pb2.FileDescriptorProto.FromString(
        itself.file_descriptor_response.file_descriptor_proto[0]
    )
    assert (own.name, own.package) == (
        f"grpc{'/' if version == 'v1' else '_'}reflection/{version}/reflection.proto",
        f"grpc.reflection.{version}",
    )  # fmt: skip
    method = own.service[0].method[0]
    assert method.input_type == f".grpc.reflection.{version}.ServerReflectionRequest"


def test_grpcurl_describes_through_reflection(server: ServerThread) -> None:
    done = grpcurl("-plaintext", server.address, "describe", "zerodb.v1.LoadService")
    assert done.returncode == 0, done.stderr
    assert "rpc GetLoad" in done.stdout
