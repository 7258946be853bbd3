"""Who may call what, walked over every RPC the protos declare: no RPC answers without a key of
the project it names, and the policy refuses what it does not know (it fails closed)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor

from tests.plugins.server import Project, ServerThread
from zerodb.v1 import event_pb2, load_pb2, memory_pb2, rlhf_pb2, table_pb2, vector_pb2
from zerodb_batch.errors import PermissionDenied
from zerodb_batch.interceptors.auth import Access


def every_method() -> Iterator[MethodDescriptor]:
    for module in (table_pb2, memory_pb2, vector_pb2, event_pb2, rlhf_pb2, load_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            yield from service.methods


METHODS = list(every_method())


def call(
    channel: grpc.Channel, method: MethodDescriptor, project_id: str, metadata: object
) -> None:
    request = message_factory.GetMessageClass(method.input_type)(project_id=project_id)
    payload = request.SerializeToString()
    path = f"/{method.containing_service.full_name}/{method.name}"
    if method.client_streaming:
        channel.stream_unary(path)(iter([payload]), metadata=metadata, timeout=10)
    elif method.server_streaming:
        next(iter(channel.unary_stream(path)(payload, metadata=metadata, timeout=10)))
    else:
        channel.unary_unary(path)(payload, metadata=metadata, timeout=10)


def test_every_rpc_is_declared_with_a_project() -> None:
    assert len(METHODS) >= 25
    for method in METHODS:
        assert "project_id" in method.input_type.fields_by_name, method.full_name


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name)
def test_every_rpc_needs_a_key_of_the_project_it_names(
    channel: grpc.Channel, project: Project, server: ServerThread, method: MethodDescriptor
) -> None:
    other = Project(*server.new_key())
    for metadata, code in (
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("x-api-key", "zdb_not-a-key"),), grpc.StatusCode.UNAUTHENTICATED),
        (other.auth, grpc.StatusCode.PERMISSION_DENIED),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call(channel, method, project.id, metadata)
        assert caught.value.code() is code, (method.full_name, metadata)


@pytest.mark.parametrize(
    ("method", "client", "server", "why"),
    [
        ("/zerodb.v1.MemoryService/NoSuchRpc", False, False, "names no project_id"),
        ("/zerodb.v1.MemoryService/BatchUpsertMemories", True, True, "bidirectional"),
        ("/other.v1.Service/Call", False, False, "not part of this API"),
    ],
)
def test_the_policy_refuses_what_it_does_not_know(
    method: str, client: bool, server: bool, why: str
) -> None:
    access = Access.of(method, client, server)
    with pytest.raises(PermissionDenied) as caught:
        access.refuse_if_closed()
    assert why in caught.value.message


def test_health_and_reflection_stay_open() -> None:
    for method in (
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    ):
        access = Access.of(method, False, False)
        access.refuse_if_closed()
        assert not access.scoped


def test_descriptor_pool_knows_every_rpc() -> None:
    pool = descriptor_pool.Default()
    for method in METHODS:
        assert pool.FindMethodByName(method.full_name) is method
