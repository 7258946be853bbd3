"""Isolation, walked over every RPC the protos declare: project A's key can neither read, write,
subscribe to, nor learn the existence of anything of project B.

Project B makes one of everything (a memory, a table with rows, events and a consumer group,
interactions, a streamed load, idempotent writes under a request id). Then, for each RPC, a fresh
project A calls it twice with its own key: once naming B's objects (ids, table, topic, group,
stream ids, load id, request id) and once naming objects that never existed. The two answers must
be the same once the names are blanked out (so nothing tells B's objects apart from made-up
ones), and naming B's project instead of A's is PERMISSION_DENIED alike for both. At the end B's
objects are as B left them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, json_format, message_factory, struct_pb2
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from tests.api.test_access import METHODS
from tests.plugins.checks import details
from tests.plugins.server import Project, ServerThread
from zerodb.v1 import event_pb2, load_pb2, memory_pb2, rlhf_pb2, table_pb2, vector_pb2

Build = Callable[[str, "Names"], list[Message]]  # (project_id, names) -> the request message(s)


@dataclass(frozen=True)
class Names:
    """What a project calls its objects; B's exist, a stranger's never did."""

    memory: str
    table: str
    topic: str
    group: str
    stream_id: str
    load: str
    request: str
    session: str
    interaction: str
    namespace: str

    @classmethod
    def fresh(cls, stream_id: str = "1700000000000-1") -> Names:
        tag = uuid.uuid4().hex[:10]
        return cls(
            memory=f"mem-{tag}", table=f"t_{tag}", topic=f"topic.{tag}", group=f"g-{tag}",
            stream_id=stream_id, load=f"load-{tag}", request=f"req-{tag}",
            session=f"s-{tag}", interaction=f"int-{tag}", namespace=f"ns-{tag}",
        )  # fmt: skip


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def _memory(n: Names) -> memory_pb2.Memory:
    return memory_pb2.Memory(id=n.memory, content="secret of B", session_id=n.session)


def _interaction(n: Names) -> rlhf_pb2.Interaction:
    return rlhf_pb2.Interaction(id=n.interaction, prompt="p", response="r", session_id=n.session)


def _vector(n: Names) -> vector_pb2.Vector:
    return vector_pb2.Vector(id=n.memory, vector_embedding=[1.0, 0.0, 0.0], document="B's")


def _query(n: Names, op: str = "query") -> table_pb2.TableOperation:
    return table_pb2.TableOperation(op=op, table=n.table)


def _one(message: Message) -> list[Message]:
    return [message]


# One request per RPC, naming the objects in `n`. The walk fails for an RPC missing here.
REQUESTS: dict[str, Build] = {
    "TableService.CreateTable": lambda p, n: _one(
        table_pb2.CreateTableRequest(project_id=p, name=n.table)),
    "TableService.ListTables": lambda p, n: _one(table_pb2.ListTablesRequest(project_id=p)),
    "TableService.DeleteTable": lambda p, n: _one(
        table_pb2.DeleteTableRequest(project_id=p, name=n.table)),
    "TableService.BatchQuery": lambda p, n: _one(table_pb2.BatchQueryRequest(
        project_id=p, request_id=n.request,
        operations=[_query(n), _query(n, "count"),
                    table_pb2.TableOperation(op="update", table=n.table, all_rows=True,
                                             update=_struct({"$set": {"x": 1}}))])),
    "TableService.StreamInsertRows": lambda p, n: _one(table_pb2.StreamInsertRowsRequest(
        project_id=p, load_id=n.load, offset=1, table=n.table, rows=[_struct({"a": 1})])),
    "MemoryService.BatchUpsertMemories": lambda p, n: _one(memory_pb2.BatchUpsertMemoriesRequest(
        project_id=p, records=[_memory(n)], request_id=n.request)),
    "MemoryService.BatchUpdateMemories": lambda p, n: _one(memory_pb2.BatchUpdateMemoriesRequest(
        project_id=p, updates=[memory_pb2.MemoryUpdate(id=n.memory, content="changed by A")],
        request_id=n.request + "-u")),
    "MemoryService.BatchDeleteMemories": lambda p, n: _one(memory_pb2.BatchDeleteMemoriesRequest(
        project_id=p, ids=[n.memory], request_id=n.request + "-d")),
    "MemoryService.BatchGetMemories": lambda p, n: _one(
        memory_pb2.BatchGetMemoriesRequest(project_id=p, ids=[n.memory])),
    "MemoryService.ListMemories": lambda p, n: _one(
        memory_pb2.ListMemoriesRequest(project_id=p, session_id=n.session)),
    "MemoryService.StreamUpsertMemories": lambda p, n: _one(memory_pb2.StreamUpsertMemoriesRequest(
        project_id=p, load_id=n.load, offset=1, records=[_memory(n)])),
    "VectorService.BatchUpsertVectors": lambda p, n: _one(vector_pb2.BatchUpsertVectorsRequest(
        project_id=p, namespace=n.namespace, request_id=n.request + "-v", vectors=[_vector(n)])),
    "VectorService.StreamUpsertVectors": lambda p, n: _one(vector_pb2.StreamUpsertVectorsRequest(
        project_id=p, load_id=n.load, offset=1, namespace=n.namespace, vectors=[_vector(n)])),
    "VectorService.SearchVectors": lambda p, n: _one(vector_pb2.SearchVectorsRequest(
        project_id=p, namespace=n.namespace, query_vector=[1.0, 0.0, 0.0], limit=5)),
    "VectorService.BatchGetVectors": lambda p, n: _one(vector_pb2.BatchGetVectorsRequest(
        project_id=p, namespace=n.namespace, ids=[n.memory])),
    "VectorService.BatchDeleteVectors": lambda p, n: _one(vector_pb2.BatchDeleteVectorsRequest(
        project_id=p, namespace=n.namespace, ids=[n.memory], request_id=n.request + "-vd")),
    "VectorService.ListNamespaces": lambda p, n: _one(
        vector_pb2.ListNamespacesRequest(project_id=p)),
    "EventService.BatchPublishEvents": lambda p, n: _one(event_pb2.BatchPublishEventsRequest(
        project_id=p, request_id=n.request,
        events=[event_pb2.Event(topic=n.topic, event_payload=_struct({"k": "v"}))])),
    "EventService.SubscribeEvents": lambda p, n: _one(event_pb2.SubscribeEventsRequest(
        project_id=p, topics=[n.topic], consumer_group=n.group, consumer_name="c1",
        heartbeat_interval=duration_pb2.Duration(seconds=1))),
    "EventService.AckEvents": lambda p, n: _one(event_pb2.AckEventsRequest(
        project_id=p, consumer_group=n.group, stream_ids=[n.stream_id])),
    "EventService.ListEvents": lambda p, n: _one(
        event_pb2.ListEventsRequest(project_id=p, topic=n.topic)),
    "RlhfService.BatchCreateInteractions": lambda p, n: _one(
        rlhf_pb2.BatchCreateInteractionsRequest(
            project_id=p, interactions=[_interaction(n)], request_id=n.request)),
    "RlhfService.StreamCreateInteractions": lambda p, n: _one(
        rlhf_pb2.StreamCreateInteractionsRequest(
            project_id=p, load_id=n.load, offset=1, interactions=[_interaction(n)])),
    "RlhfService.ListInteractions": lambda p, n: _one(
        rlhf_pb2.ListInteractionsRequest(project_id=p, session_id=n.session)),
    "RlhfService.ExportInteractions": lambda p, n: _one(
        rlhf_pb2.ExportInteractionsRequest(project_id=p, session_id=n.session)),
    "LoadService.GetLoad": lambda p, n: _one(
        load_pb2.GetLoadRequest(project_id=p, load_id=n.load)),
}  # fmt: skip


@dataclass(frozen=True)
class World:
    """Project B, its objects' names, and what B saw of them."""

    b: Project
    names: Names


def _b_world(server: ServerThread, channel: grpc.Channel) -> World:
    b = Project(*server.new_key())
    n = Names.fresh()
    # One of everything, through B's own key; the stream id of B's event is then known.
    for method, request in _setup(b.id, n):
        _call(channel, _method(method), [request], b.auth)
    listed = event_pb2.ListEventsResponse()
    reply = _call(
        channel,
        _method("EventService.ListEvents"),
        [event_pb2.ListEventsRequest(project_id=b.id, topic=n.topic)],
        b.auth,
    )
    listed.ParseFromString(reply[0])
    n = Names(**{**asdict(n), "stream_id": listed.events[0].stream_id})
    # A consumer group of B's, left with its event delivered and not acknowledged.
    subscribe = event_pb2.SubscribeEventsRequest(
        project_id=b.id, topics=[n.topic], consumer_group=n.group, consumer_name="c1",
        start_time=listed.events[0].publish_time,
    )  # fmt: skip
    stream = channel.unary_stream("/zerodb.v1.EventService/SubscribeEvents")(
        subscribe.SerializeToString(), metadata=b.auth, timeout=20
    )
    for raw in stream:
        got = event_pb2.SubscribeEventsResponse.FromString(raw)
        if got.HasField("event"):
            break
    stream.cancel()
    return World(b, n)


def _setup(p: str, n: Names) -> list[tuple[str, Message]]:
    """B's objects: a table with a row, a memory, a load at offset 0, an event, an
    interaction, a vector; the writes under B's request id."""
    insert = table_pb2.TableOperation(op="insert", table=n.table, rows=[_struct({"a": 1})])
    return [
        ("TableService.CreateTable", table_pb2.CreateTableRequest(project_id=p, name=n.table)),
        ("TableService.BatchQuery", table_pb2.BatchQueryRequest(
            project_id=p, request_id=n.request, operations=[insert])),
        *[(name, REQUESTS[name](p, n)[0]) for name in (
            "MemoryService.BatchUpsertMemories", "EventService.BatchPublishEvents",
            "RlhfService.BatchCreateInteractions", "VectorService.BatchUpsertVectors")],
        ("MemoryService.StreamUpsertMemories", memory_pb2.StreamUpsertMemoriesRequest(
            project_id=p, load_id=n.load, offset=0,
            records=[memory_pb2.Memory(id=n.memory + "-load", content="loaded by B")])),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def world(server: ServerThread, channel: grpc.Channel) -> World:
    return _b_world(server, channel)


def _method(name: str) -> MethodDescriptor:
    return next(m for m in METHODS if m.full_name == f"zerodb.v1.{name}")


def _call(
    channel: grpc.Channel, method: MethodDescriptor, requests: list[Message], metadata: Any
) -> list[bytes]:
    """The raw response message(s) of a call; a server stream is read up to its first message."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    payloads = [r.SerializeToString() for r in requests]
    if method.client_streaming:
        return [channel.stream_unary(path)(iter(payloads), metadata=metadata, timeout=20)]
    if method.server_streaming:
        stream = channel.unary_stream(path)(payloads[0], metadata=metadata, timeout=20)
        first = next(iter(stream), None)
        stream.cancel()
        return [] if first is None else [first]
    return [channel.unary_unary(path)(payloads[0], metadata=metadata, timeout=20)]


_VOLATILE_KEYS = re.compile(r"(_time|_at|^id|^ids|event_ids)$")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _blank(value: Any, names: Names) -> Any:
    """The value with the names replaced by their role, and what differs by nature between
    any two calls (timestamps, server-made UUIDs) left out."""
    if isinstance(value, dict):
        return {k: _blank(v, names) for k, v in value.items() if not _VOLATILE_KEYS.search(k)}
    if isinstance(value, list | tuple):
        return type(value)(_blank(v, names) for v in value)
    if isinstance(value, str):
        for role, name in sorted(asdict(names).items(), key=lambda kv: -len(kv[1])):
            value = value.replace(name, f"<{role}>")
        return _UUID.sub("<uuid>", value)
    return value


def outcome(
    channel: grpc.Channel, method: MethodDescriptor, project: str, names: Names, auth: Any
) -> Any:
    """What the caller learns from one call, with the names blanked out."""
    requests = REQUESTS[method.full_name.removeprefix("zerodb.v1.")](project, names)
    try:
        raw = _call(channel, method, requests, auth)
    except grpc.RpcError as e:
        info, bad = details(e)
        violations = [(v.field, v.reason) for v in bad.field_violations]
        said = (e.code().name, info.reason, dict(info.metadata), e.details(), violations)
        return _blank(said, names)
    reply_type = message_factory.GetMessageClass(method.output_type)
    return _blank(
        [json_format.MessageToDict(reply_type.FromString(r), preserving_proto_field_name=True)
         for r in raw], names)  # fmt: skip


def test_every_rpc_is_walked() -> None:
    assert {m.full_name.removeprefix("zerodb.v1.") for m in METHODS} == set(REQUESTS)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name)
def test_a_key_of_another_project_learns_nothing(
    channel: grpc.Channel, server: ServerThread, world: World, method: MethodDescriptor
) -> None:
    stranger = Names.fresh(stream_id="1700000000000-1")
    # Naming B's project: refused alike, whether the objects exist or not.
    a = Project(*server.new_key())
    to_b = outcome(channel, method, world.b.id, world.names, a.auth)
    assert to_b[0] == "PERMISSION_DENIED" and to_b[1] == "PROJECT_MISMATCH", to_b
    assert to_b == outcome(channel, method, world.b.id, stranger, a.auth)
    # Naming A's own project with B's names: as if they had never existed. Each side gets a
    # fresh project A, so that nothing the first call made is seen by the second.
    with_b_names = outcome(channel, method, a.id, world.names, a.auth)
    other_a = Project(*server.new_key())
    with_made_up = outcome(channel, method, other_a.id, stranger, other_a.auth)
    assert with_b_names == _same_project(with_made_up, a, other_a)


def _same_project(found: Any, a: Project, other: Project) -> Any:
    """`found` as it would read with A's project id instead of the other fresh project's."""
    if isinstance(found, dict):
        return {k: _same_project(v, a, other) for k, v in found.items()}
    if isinstance(found, list | tuple):
        return type(found)(_same_project(v, a, other) for v in found)
    return found.replace(other.id, a.id) if isinstance(found, str) else found


# RPCs through which B itself sees its objects: the control that the walk names real objects
# (were the names ignored, "the same answer" would prove nothing).
_B_SEES = (
    "MemoryService.BatchGetMemories", "MemoryService.ListMemories", "EventService.ListEvents",
    "RlhfService.ListInteractions", "RlhfService.ExportInteractions", "LoadService.GetLoad",
    "VectorService.SearchVectors", "VectorService.BatchGetVectors", "VectorService.ListNamespaces",
)  # fmt: skip


@pytest.mark.parametrize("name", _B_SEES)
def test_control_b_itself_tells_its_objects_from_made_up_ones(
    channel: grpc.Channel, world: World, name: str
) -> None:
    method, b = _method(name), world.b
    stranger = Names.fresh()
    assert outcome(channel, method, b.id, world.names, b.auth) != outcome(
        channel, method, b.id, stranger, b.auth
    )


def test_b_is_as_b_left_it(channel: grpc.Channel, world: World) -> None:
    """After every RPC was called by other projects with B's names (runs after the walk)."""
    b, n = world.b, world.names
    got = memory_pb2.BatchGetMemoriesResponse.FromString(
        _call(channel, _method("MemoryService.BatchGetMemories"),
              [memory_pb2.BatchGetMemoriesRequest(project_id=b.id, ids=[n.memory])], b.auth)[0]
    )  # fmt: skip
    assert [m.content for m in got.memories] == ["secret of B"]
    rows = table_pb2.BatchQueryResponse.FromString(
        _call(channel, _method("TableService.BatchQuery"),
              [table_pb2.BatchQueryRequest(project_id=b.id, operations=[_query(n)])], b.auth)[0]
    )  # fmt: skip
    assert [json_format.MessageToDict(r.row_data) for r in rows.results[0].rows] == [{"a": 1}]
    load = load_pb2.GetLoadResponse.FromString(
        _call(channel, _method("LoadService.GetLoad"),
              [load_pb2.GetLoadRequest(project_id=b.id, load_id=n.load)], b.auth)[0]
    ).load  # fmt: skip
    assert (load.kind, load.last_offset) == ("memories", 0)
    events = event_pb2.ListEventsResponse.FromString(
        _call(channel, _method("EventService.ListEvents"),
              [event_pb2.ListEventsRequest(project_id=b.id, topic=n.topic)], b.auth)[0]
    )  # fmt: skip
    assert len(events.events) == 1
    # B's event is still pending in B's group: nobody else's AckEvents reached it.
    acked = event_pb2.AckEventsResponse.FromString(
        _call(channel, _method("EventService.AckEvents"),
              [event_pb2.AckEventsRequest(project_id=b.id, consumer_group=n.group,
                                          stream_ids=[n.stream_id])], b.auth)[0]
    )  # fmt: skip
    assert acked.acked == 1
    vectors = vector_pb2.BatchGetVectorsResponse.FromString(
        _call(channel, _method("VectorService.BatchGetVectors"),
              [vector_pb2.BatchGetVectorsRequest(project_id=b.id, namespace=n.namespace,
                                                 ids=[n.memory])], b.auth)[0]
    )  # fmt: skip
    assert [v.document for v in vectors.vectors] == ["B's"]
