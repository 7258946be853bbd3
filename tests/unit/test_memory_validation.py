"""Memory record validation: the generated fast path and the full check must agree."""

from __future__ import annotations

import json
import math

import pytest
from google.protobuf import struct_pb2

from zerodb.v1 import memory_pb2
from zerodb_batch.domain.memory import MEMORY, MemoryColumns
from zerodb_batch.domain.records import ParsedBatch, RecordParser
from zerodb_batch.domain.struct_json import fast_text
from zerodb_batch.domain.struct_json import to_dict as struct_to_dict
from zerodb_batch.domain.validate import Checker
from zerodb_batch.errors import InvalidArgument


def parse(*records: memory_pb2.Memory, partial: bool = True) -> ParsedBatch[MemoryColumns]:
    parser = RecordParser(
        list(records), MEMORY, MemoryColumns(), field_name="records", partial=partial
    )
    return parser.parse_all()


def metadata_json(value: struct_pb2.Struct) -> str | None:
    return fast_text(value, 16384)


def struct(value: dict[str, object]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


@pytest.mark.parametrize(
    "record",
    [
        memory_pb2.Memory(content="x" * 20_000),  # past the fast path, within 64 KiB
        memory_pb2.Memory(content="é" * 30_000),  # 60,000 bytes of UTF-8
        memory_pb2.Memory(metadata=struct({"blob": "y" * 40_000})),
        memory_pb2.Memory(tags=["t" * 128] * 64, importance=1.0),
        memory_pb2.Memory(id="i" * 128, session_id="s" * 128, importance=0.0),
    ],
)
def test_valid_at_the_limits(record: memory_pb2.Memory) -> None:
    batch = parse(record)
    assert batch.failures == {} and len(batch.rows) == 1


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (memory_pb2.Memory(content="é" * 40_000), "records[0].content"),
        (memory_pb2.Memory(metadata=struct({"blob": "y" * 70_000})), "records[0].metadata"),
        (memory_pb2.Memory(metadata=struct({"n": math.nan})), "records[0].metadata"),
        (memory_pb2.Memory(tags=["t"] * 65), "records[0].tags"),
        (memory_pb2.Memory(tags=["t" * 129]), "records[0].tags[0]"),
        (memory_pb2.Memory(importance=-0.1), "records[0].importance"),
        (memory_pb2.Memory(importance=math.nan), "records[0].importance"),
        (memory_pb2.Memory(memory_type="Semantic"), "records[0].memory_type"),
        (memory_pb2.Memory(agent_id="a" * 129), "records[0].agent_id"),
        (memory_pb2.Memory(entity_id="a\x00"), "records[0].entity_id"),
    ],
)
def test_each_rule_names_its_field(record: memory_pb2.Memory, field: str) -> None:
    batch = parse(record)
    assert [v.field for v in batch.failures[0]] == [field]
    assert len(batch.rows) == 0


def test_defaults_and_generated_ids() -> None:
    batch = parse(memory_pb2.Memory(), memory_pb2.Memory(id="keep"))
    assert batch.rows.memory_types == ["episodic", "episodic"]
    assert batch.rows.importances == [0.5, 0.5]
    assert batch.rows.ids[1] == "keep" and len(batch.rows.ids[0]) == 36


def test_atomic_batch_raises_with_every_violation() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse(memory_pb2.Memory(importance=2), memory_pb2.Memory(), memory_pb2.Memory(id="a"),
              memory_pb2.Memory(id="a", memory_type="x"), partial=False)  # fmt: skip
    assert [v.field for v in caught.value.violations] == [
        "records[0].importance", "records[3].memory_type", "records[3].id"]  # fmt: skip


def test_records_parse_in_the_order_given_and_duplicates_name_the_earlier() -> None:
    records = [memory_pb2.Memory(id="b"), memory_pb2.Memory(id="a"), memory_pb2.Memory(id="b")]
    parser = RecordParser(
        records, MEMORY, MemoryColumns(), field_name="records", partial=True, order=[1, 0, 2]
    )
    batch = parser.parse_all()
    assert batch.rows.ids == ["a", "b"] and batch.rows.index == [1, 0]
    assert [v.field for v in batch.failures[2]] == ["records[2].id"]
    assert batch.sent_ids == {2: "b"}


@pytest.mark.parametrize("depth", [19, 20, 21, 25])
def test_metadata_nesting_is_limited_to_20_levels(depth: int) -> None:
    value: object = "leaf"
    for level in range(depth - 1):
        value = {"k": value} if level % 2 else [value]
    record = memory_pb2.Memory(metadata=struct({"k": value}))
    failures = parse(record).failures
    if depth <= 20:
        assert failures == {}
    else:
        assert [(v.field, v.reason) for v in failures[0]] == [
            ("records[0].metadata", "INVALID_VALUE")
        ]
        assert "nested deeper than 20" in failures[0][0].description


def test_every_memory_rule_appears_in_the_generated_fast_path() -> None:
    """The one declaration drives both paths: each rule reads its field in the fast path."""
    for rule in MEMORY.rules:
        assert f"r.{rule.name}" in MEMORY.source
    checker = Checker("records[0]")
    MEMORY.check(checker, memory_pb2.Memory(importance=3, memory_type="x"))
    assert {v.field for v in checker.violations} == {
        "records[0].importance",
        "records[0].memory_type",
    }


@pytest.mark.parametrize(
    "value",
    [
        {"s": 'quote " back \\ nl \n tab \t bell \x07 é 漢 🙂', "empty": ""},
        {"i": 3, "neg": -7, "big": 2**60, "f": 0.1, "e": 1e300, "tiny": 5e-324, "z": -0.0},
        {"b": True, "f": False, "n": None, "l": [1, "a", [], {}, [None, {"k": [2.5]}]]},
        {"nested": {"deeper": {"deepest": {"x": "y"}}}},
        {},
    ],
)
def test_metadata_json_is_what_json_dumps_writes(value: dict[str, object]) -> None:
    s = struct(value)
    expected = json.dumps(struct_to_dict(s), ensure_ascii=False, separators=(",", ":"))
    assert metadata_json(s) == expected
    assert json.loads(expected) == struct_to_dict(s)


def test_metadata_json_refuses_non_finite_numbers() -> None:
    assert metadata_json(struct({"x": [1, {"y": math.inf}]})) is None


PAD = "y" * 20_000  # past the fast path: the record goes through the Checker


@pytest.mark.parametrize(
    "value",
    [{"path": "C:\\u0000x"}, {"C:\\u0000": 1}, {"l": ["\\\\\\u0000", "a\\\\u0000"]}],
)
def test_a_backslash_before_u0000_is_no_nul(value: dict[str, object]) -> None:
    """`\\u0000` written as text (a backslash escaped as `\\\\`) is valid metadata."""
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert metadata_json(struct(value)) == expected
    for record in (struct(value), struct({**value, "pad": PAD})):
        batch = parse(memory_pb2.Memory(metadata=record))
        assert batch.failures == {}
        assert json.loads(batch.rows.metadata[0]) == struct_to_dict(record)


@pytest.mark.parametrize(
    "value",
    [{"k": "a\x00"}, {"\x00": 1}, {"k": "\\\x00"}, {"k": ["\\\\\x00"]}, {"k": {"n": "\x00\\"}}],
)
def test_a_real_nul_is_refused_on_both_paths(value: dict[str, object]) -> None:
    assert metadata_json(struct(value)) is None
    for record in (struct(value), struct({**value, "pad": PAD})):
        failures = parse(memory_pb2.Memory(metadata=record)).failures[0]
        assert [(v.field, v.reason) for v in failures] == [
            ("records[0].metadata", "INVALID_CHARACTER")
        ]


def test_columns_since_slices_every_column() -> None:
    batch = parse(*(memory_pb2.Memory(id=f"m{i}", content=f"c{i}") for i in range(5)))
    part = batch.rows.since(3)
    assert (part.index, part.ids, part.contents) == ([3, 4], ["m3", "m4"], ["c3", "c4"])
    assert len(part) == 2 and len(batch.rows) == 5  # the whole is left as it was
