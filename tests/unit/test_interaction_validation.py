"""Interaction validation: the generated fast path and the full check agree, and the model is
taken from the seed's `metadata.model` only when the interaction names none."""

from __future__ import annotations

import uuid

import pytest
from google.protobuf import struct_pb2

from zerodb.v1 import rlhf_pb2
from zerodb_batch.domain.ids import new_uuids
from zerodb_batch.domain.interaction import INTERACTION
from zerodb_batch.domain.records import ParsedBatch, RecordParser
from zerodb_batch.domain.validate import Checker


class Values:
    """A rows sink that keeps each valid interaction's values as the rules produce them."""

    def __init__(self) -> None:
        self.rows: list[tuple[object, ...]] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, index: int, *values: object) -> None:
        self.rows.append(values)

    def column(self, name: str) -> list[object]:
        at = [rule.name for rule in INTERACTION.rules].index(name)
        return [row[at] for row in self.rows]


def parse(*items: rlhf_pb2.Interaction) -> ParsedBatch[Values]:
    parser = RecordParser(
        list(items), INTERACTION, Values(), field_name="interactions", partial=True
    )
    return parser.parse_all()


def with_metadata(value: dict[str, object], **kw: object) -> rlhf_pb2.Interaction:
    metadata = struct_pb2.Struct()
    metadata.update(value)
    return rlhf_pb2.Interaction(prompt="p", metadata=metadata, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "item",
    [
        rlhf_pb2.Interaction(prompt="p"),
        rlhf_pb2.Interaction(prompt="é" * 300_000, response="r" * 1_048_576),  # at the caps
        rlhf_pb2.Interaction(prompt="p", context="x" * 500_000, human_feedback="h" * 65_536),
        rlhf_pb2.Interaction(prompt="p", reward=-1.0, feedback="negative", model="m" * 256),
        with_metadata({"model": "q", "pad": "y" * 20_000}),
    ],
)
def test_the_fast_path_and_the_full_check_give_the_same_values(
    item: rlhf_pb2.Interaction,
) -> None:
    checker = Checker("interactions[0]")
    full = INTERACTION.check(checker, item)
    assert checker.violations == []
    fast = INTERACTION.fast(item)
    assert fast is None or fast == full  # None: in doubt, the full check decided
    assert parse(item).failures == {}


def test_model_comes_from_metadata_only_when_empty() -> None:
    batch = parse(
        with_metadata({"model": "from-metadata"}),
        with_metadata({"model": "from-metadata"}, model="own"),
        with_metadata({"model": 3}),
        with_metadata({}),
    )
    assert batch.rows.column("model") == ["from-metadata", "own", "", ""]
    assert batch.rows.column("metadata")[0] == '{"model":"from-metadata"}'  # kept as sent


def test_a_bad_model_in_metadata_names_its_path() -> None:
    batch = parse(with_metadata({"model": "m" * 257}), with_metadata({"model": "a\x00"}))
    assert [(v.field, v.reason) for v in batch.failures[0]] == [
        ("interactions[0].metadata.model", "TOO_LONG")
    ]
    assert [(v.field, v.reason) for v in batch.failures[1]] == [
        ("interactions[1].metadata.model", "INVALID_CHARACTER"),
        ("interactions[1].metadata", "INVALID_CHARACTER"),
    ]


def test_unset_optionals_have_no_value() -> None:
    batch = parse(rlhf_pb2.Interaction(prompt="p"), rlhf_pb2.Interaction(prompt="p", reward=0.0))
    assert batch.rows.column("feedback") == [None, None]
    assert batch.rows.column("reward") == [None, 0.0]


def test_new_uuids_are_distinct_random_version_4_uuids() -> None:
    made = new_uuids(5000)
    assert len(set(made)) == 5000
    for text in made:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)
