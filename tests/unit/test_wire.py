"""Wire-format pieces appended to serialized messages, read back by protobuf itself."""

from __future__ import annotations

import pytest

from zerodb.v1 import memory_pb2, vector_pb2
from zerodb_batch.domain import wire


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**29 - 1, 2**63 - 1])
def test_varint_reads_back(n: int) -> None:
    message = memory_pb2.StreamUpsertMemoriesRequest.FromString(
        wire.tag(3, wire.VARINT) + wire.varint(n)  # field 3: offset (int64)
    )
    assert message.offset == n


@pytest.mark.parametrize(
    "kind", [memory_pb2.StreamUpsertMemoriesRequest, vector_pb2.StreamUpsertVectorsRequest]
)
def test_a_true_field_appended_sets_it(kind: type[memory_pb2.StreamUpsertMemoriesRequest]) -> None:
    sent = kind(load_id="l", offset=7).SerializeToString()
    number = kind.DESCRIPTOR.fields_by_name["final"].number
    again = kind.FromString(sent + wire.true_field(number))
    assert (again.load_id, again.offset, again.final) == ("l", 7, True)
    assert kind.FromString(kind(final=True).SerializeToString() + wire.true_field(number)).final
