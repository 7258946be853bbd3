"""Requests the server cannot take as they are: bytes that do not decode, undefined enum values,
timestamps and stream ids out of range, RPCs not built. Each is a clear status with details,
never UNKNOWN or INTERNAL, and the server keeps serving."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import timestamp_pb2

from tests.plugins.checks import details
from tests.plugins.server import Project, ServerThread
from zerodb.v1 import event_pb2, memory_pb2, memory_pb2_grpc, table_pb2, table_pb2_grpc
from zerodb_batch.interceptors.api_interceptor import ApiInterceptor
from zerodb_batch.interceptors.auth import Authenticator

UPSERT = "/zerodb.v1.MemoryService/BatchUpsertMemories"
STREAM = "/zerodb.v1.MemoryService/StreamUpsertMemories"


def nested(depth: int) -> dict[str, object]:
    value: object = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return {"k": value}


def upsert_bytes(project: Project, **record: object) -> bytes:
    request = memory_pb2.BatchUpsertMemoriesRequest(project_id=project.id)
    memory = request.records.add()
    for name, value in record.items():
        if name == "metadata":
            memory.metadata.update(value)  # type: ignore[arg-type]
        else:
            setattr(memory, name, value)
    return request.SerializeToString()


def with_invalid_utf8(project: Project) -> bytes:
    """content = b'\\xff\\xfe': proto3 strings must be UTF-8."""
    record = b"\x12\x02\xff\xfe"  # Memory.content (field 2, length 2)
    return upsert_bytes(project) + b"\x12" + bytes([len(record)]) + record


@pytest.fixture
def raw(channel: grpc.Channel) -> Iterator[grpc.Channel]:
    yield channel


def call_raw(channel: grpc.Channel, method: str, payload: bytes, project: Project) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(method)(payload, metadata=project.auth, timeout=10)
    return caught.value


@pytest.mark.parametrize(
    "make",
    [
        with_invalid_utf8,
        lambda p: upsert_bytes(p, content="c" * 100)[:-20],  # truncated
        lambda p: upsert_bytes(p, metadata=nested(40)),  # past the decoder's depth
        lambda p: b"\xff" * 64,  # not protobuf at all
    ],
    ids=["invalid-utf8", "truncated", "nested-40", "garbage"],
)
def test_undecodable_requests_are_invalid_argument(
    raw: grpc.Channel,
    project: Project,
    memories: memory_pb2_grpc.MemoryServiceStub,
    caplog: pytest.LogCaptureFixture,
    make: object,
) -> None:
    with caplog.at_level(logging.INFO):
        err = call_raw(raw, UPSERT, make(project), project)  # type: ignore[operator]
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "<class" not in (err.details() or "")
    assert details(err)[0].reason == "MALFORMED_REQUEST"
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a client's mistake"
    # The server keeps serving, and nothing was written.
    ok = memories.BatchUpsertMemories(
        memory_pb2.BatchUpsertMemoriesRequest(project_id=project.id, records=[{"content": "x"}]),
        metadata=project.auth,
    )
    assert ok.inserted == 1


def test_metadata_nested_within_the_decoder_but_past_our_limit_names_the_field(
    raw: grpc.Channel, project: Project
) -> None:
    err = call_raw(raw, UPSERT, upsert_bytes(project, metadata=nested(25)), project)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    violation = details(err)[1].field_violations[0]
    assert violation.field == "records[0].metadata"
    assert "nested deeper than 20" in violation.description


def test_an_undecodable_chunk_of_a_stream_is_invalid_argument(
    raw: grpc.Channel, project: Project
) -> None:
    good = memory_pb2.StreamUpsertMemoriesRequest(
        project_id=project.id, load_id="bad-bytes", offset=0, records=[{"content": "a"}]
    ).SerializeToString()
    bad = good + b"\x22\x04\x12\x02\xff\xfe"  # a record whose content is not UTF-8
    with pytest.raises(grpc.RpcError) as caught:
        raw.stream_unary(STREAM)(iter([bad]), metadata=project.auth, timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[0].reason == "MALFORMED_REQUEST"


def test_an_undefined_enum_value_is_refused(
    memories: memory_pb2_grpc.MemoryServiceStub, project: Project
) -> None:
    request = memory_pb2.ListMemoriesRequest(project_id=project.id)
    request.tag_match = 99  # type: ignore[assignment]
    with pytest.raises(grpc.RpcError) as caught:
        memories.ListMemories(request, metadata=project.auth)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1].field_violations[0].field == "tag_match"


FAR_FUTURE = timestamp_pb2.Timestamp(seconds=10**15)
BEFORE_YEAR_1 = timestamp_pb2.Timestamp(seconds=-(10**12))


@pytest.mark.parametrize("when", [FAR_FUTURE, BEFORE_YEAR_1, timestamp_pb2.Timestamp(nanos=-1)])
def test_out_of_range_times_are_invalid_argument(
    channel: grpc.Channel, project: Project, when: timestamp_pb2.Timestamp
) -> None:
    from zerodb.v1.event_pb2_grpc import EventServiceStub

    events = EventServiceStub(channel)
    calls = [
        lambda: events.ListEvents(
            event_pb2.ListEventsRequest(project_id=project.id, start_time=when),
            metadata=project.auth,
        ),
        lambda: next(
            events.SubscribeEvents(
                event_pb2.SubscribeEventsRequest(project_id=project.id, start_time=when),
                metadata=project.auth,
                timeout=10,
            )
        ),
        lambda: memory_pb2_grpc.MemoryServiceStub(channel).ListMemories(
            memory_pb2.ListMemoriesRequest(project_id=project.id, end_time=when),
            metadata=project.auth,
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert details(caught.value)[1].field_violations[0].reason == "OUT_OF_RANGE"


@pytest.mark.parametrize(
    "stream_id", [f"{2**64 - 1}-{2**64 - 1}", f"1-{2**63}", "99999999999999999"]
)
def test_a_stream_id_no_event_can_have_is_invalid_argument(
    channel: grpc.Channel, project: Project, stream_id: str
) -> None:
    from zerodb.v1.event_pb2_grpc import EventServiceStub

    request = event_pb2.SubscribeEventsRequest(
        project_id=project.id, start_after_stream_id=stream_id
    )
    with pytest.raises(grpc.RpcError) as caught:
        next(EventServiceStub(channel).SubscribeEvents(request, metadata=project.auth, timeout=10))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1].field_violations[0].field == "start_after_stream_id"


def test_an_rpc_not_built_is_unimplemented_with_its_reason(server: ServerThread) -> None:
    """Through our interceptor, a generated base servicer answers UNIMPLEMENTED with ErrorInfo
    NOT_IMPLEMENTED (on a server of its own: every RPC of the app is built, or soon will be)."""

    async def start() -> tuple[grpc.aio.Server, int]:
        interceptor = ApiInterceptor(Authenticator(server.app.db, 0))
        alone = grpc.aio.server(interceptors=[interceptor])
        base: object = table_pb2_grpc.TableServiceServicer()
        table_pb2_grpc.add_TableServiceServicer_to_server(base, alone)  # type: ignore[arg-type]
        port = alone.add_insecure_port("127.0.0.1:0")
        await alone.start()
        return alone, port

    alone, port = server.run(start())
    project = Project(*server.new_key())
    try:
        with (
            grpc.insecure_channel(f"127.0.0.1:{port}") as ch,
            pytest.raises(grpc.RpcError) as caught,
        ):
            table_pb2_grpc.TableServiceStub(ch).ListTables(
                table_pb2.ListTablesRequest(project_id=project.id), metadata=project.auth
            )
    finally:
        server.run(alone.stop(0))
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert details(caught.value)[0].reason == "NOT_IMPLEMENTED"


def test_an_error_too_large_for_the_trailers_keeps_its_details(
    memories: memory_pb2_grpc.MemoryServiceStub, project: Project
) -> None:
    """1000 bad update paths, each quoted back: grpc clients drop trailers past 8 KiB (a bare
    RESOURCE_EXHAUSTED), so the status is cut to fit and counts what it leaves out."""
    request = memory_pb2.BatchUpdateMemoriesRequest(
        project_id=project.id, updates=[{"id": "x", "content": "c"}]
    )
    request.update_mask.paths.extend(["no.such.path" + "z" * 200] * 1000)
    with pytest.raises(grpc.RpcError) as caught:
        memories.BatchUpdateMemories(request, metadata=project.auth)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    info, bad = details(caught.value)
    assert 0 < len(bad.field_violations) < int(info.metadata["violations_total"])
    assert info.metadata["violations_shown"] == str(len(bad.field_violations))
