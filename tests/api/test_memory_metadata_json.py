"""`metadata_json`: a memory's metadata sent as JSON text, by batch upsert and by stream."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2

from tests.api.test_memory_upsert import upsert
from tests.plugins.checks import details
from tests.plugins.server import Project
from zerodb.v1 import memory_pb2
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub

META = {"source": "chat", "n": 3, "ratio": 0.25, "nested": {"ok": True, "l": [1, "a", None]}}
TEXT = '{"source": "chat", "n": 3, "ratio": 0.25,\n "nested": {"ok": true, "l": [1, "a", null]}}'


def read_back(stub: MemoryServiceStub, project: Project, ids: list[str]) -> list[memory_pb2.Memory]:
    request = memory_pb2.BatchGetMemoriesRequest(project_id=project.id, ids=ids)
    return list(stub.BatchGetMemories(request, metadata=project.auth).memories)


def refused(stub: MemoryServiceStub, project: Project, text: str) -> tuple[str, str, str]:
    """The one violation of a batch whose second record sends `text` as its metadata_json."""
    records = [memory_pb2.Memory(content="fine"), memory_pb2.Memory(metadata_json=text)]
    with pytest.raises(grpc.RpcError) as caught:
        upsert(stub, project, records)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = details(caught.value)[1].field_violations
    return violation.field, violation.reason, violation.description


def test_text_and_struct_store_the_same_object(
    memories: MemoryServiceStub, project: Project
) -> None:
    meta = struct_pb2.Struct()
    meta.update(META)
    records = [
        memory_pb2.Memory(content="struct", metadata=meta),
        memory_pb2.Memory(content="text", metadata_json=TEXT),  # with a newline, for COPY too
    ]
    reply = upsert(memories, project, records)
    got = read_back(memories, project, list(reply.ids))
    assert got[0].metadata == got[1].metadata == meta
    assert not got[1].metadata_json  # input only: reads answer with the Struct


def test_text_through_a_stream_matches_the_struct(
    memories: MemoryServiceStub, project: Project
) -> None:
    meta = struct_pb2.Struct()
    meta.update(META)
    chunk = memory_pb2.StreamUpsertMemoriesRequest(
        project_id=project.id,
        load_id="json-text",
        offset=0,
        records=[
            memory_pb2.Memory(id="s", metadata=meta),
            memory_pb2.Memory(id="t", metadata_json=TEXT),
            memory_pb2.Memory(id="e", metadata_json=""),  # unset: an empty object
        ],
    )
    memories.StreamUpsertMemories(iter([chunk]), metadata=project.auth)
    got = {m.id: m.metadata for m in read_back(memories, project, ["s", "t", "e"])}
    assert got == {"s": meta, "t": meta, "e": struct_pb2.Struct()}


def test_both_fields_refused_naming_the_text(memories: MemoryServiceStub, project: Project) -> None:
    meta = struct_pb2.Struct()
    meta.update({"a": 1})
    with pytest.raises(grpc.RpcError) as caught:
        upsert(memories, project, [memory_pb2.Memory(metadata=meta, metadata_json='{"a": 1}')])
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = details(caught.value)[1].field_violations
    assert (violation.field, violation.reason) == ("records[0].metadata_json", "CONFLICTING_FIELDS")


@pytest.mark.parametrize(
    ("text", "reason", "said"),
    [
        ('{"a": ', "INVALID_JSON", "not valid JSON"),
        ('{"a": NaN}', "INVALID_JSON", "not valid JSON"),
        ('{"a": 1e400}', "INVALID_JSON", "infinity"),
        ('{"a": "\\ud800"}', "INVALID_JSON", "surrogate"),
        ("[1, 2]", "INVALID_VALUE", "must be a JSON object, got an array"),
        ('"text"', "INVALID_VALUE", "got a string"),
        ("null", "INVALID_VALUE", "got null"),
        ('{"k": "a\\u0000b"}', "INVALID_CHARACTER", "NUL"),
        ('{"a":' * 21 + "1" + "}" * 21, "INVALID_VALUE", "deeper than 20"),
        ('{"pad": "' + "y" * 70_000 + '"}', "TOO_LONG", "65536 bytes"),
    ],
)
def test_bad_text_refused_with_its_path(
    memories: MemoryServiceStub, project: Project, text: str, reason: str, said: str
) -> None:
    field, got_reason, description = refused(memories, project, text)
    assert (field, got_reason) == ("records[1].metadata_json", reason)
    assert said in description


def test_limits_equal_the_structs(memories: MemoryServiceStub, project: Project) -> None:
    """20 levels and an escaped backslash before `u0000` (text, not NUL) are fine, as in a Struct;
    so is text that is long in characters but within the byte limit."""
    deep, long = '{"a":' * 20 + "1" + "}" * 20, '{"p": "' + "y" * 20_000 + '"}'
    texts = [deep, '{"path": "C:\\\\u0000x"}', long]
    reply = upsert(memories, project, [memory_pb2.Memory(metadata_json=t) for t in texts])
    got = read_back(memories, project, list(reply.ids))
    assert got[1].metadata["path"] == "C:\\u0000x"
    assert len(got[2].metadata["p"]) == 20_000


def test_partial_success_reports_the_bad_text(
    memories: MemoryServiceStub, project: Project
) -> None:
    records = [memory_pb2.Memory(metadata_json='{"ok": 1}'), memory_pb2.Memory(metadata_json="{")]
    reply = upsert(memories, project, records, partial_success=True)
    assert (reply.inserted, reply.failed) == (1, 1)
