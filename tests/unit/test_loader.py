"""The loader's file handling: line parsing and deterministic chunking (no server)."""

from __future__ import annotations

import itertools
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from zerodb.v1 import memory_pb2
from zerodb_batch.config import Settings
from zerodb_batch.load_kinds import MEMORIES
from zerodb_batch.load_kinds import parse_memory as parse_line
from zerodb_batch.loader import BadLine, Chunk, Chunking, Prefetch, read_chunks
from zerodb_batch.loader import default_load_id as load_id_of

GOOD = {
    "content": "likes tea",
    "memory_type": "semantic",
    "importance": 0.8,
    "tags": ["pref"],
    "metadata": {"source": "chat", "n": 1},
    "session_id": "s1",
}


def message_of(chunk: Chunk) -> memory_pb2.StreamUpsertMemoriesRequest:
    return memory_pb2.StreamUpsertMemoriesRequest(
        records=map(memory_pb2.Memory.FromString, chunk.records)
    )


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_parse_line_takes_the_seed_record_keys() -> None:
    memory = parse_line(json.dumps({**GOOD, "id": "m1", "agent_id": "a", "entity_id": "e"}))
    assert (memory.id, memory.content, memory.memory_type) == ("m1", "likes tea", "semantic")
    assert (memory.importance, list(memory.tags), memory.session_id) == (0.8, ["pref"], "s1")
    assert json.loads(memory.metadata_json) == {"source": "chat", "n": 1}  # sent as text
    assert not parse_line('{"content": "x"}').HasField("importance")


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"content": "x", "colour": "red"}', "unknown field(s) colour"),
        ('{"content": 5}', "content must be a string"),
        ('{"importance": "high"}', "importance must be a number"),
        ('{"importance": true}', "importance must be a number"),
        ('{"tags": ["a", 1]}', "tags must be a list of strings"),
        ('{"metadata": [1]}', "metadata must be a JSON object"),
    ],
)
def test_parse_line_says_what_is_wrong(line: str, why: str) -> None:
    with pytest.raises(BadLine, match=why.replace("(", r"\(").replace(")", r"\)")):
        parse_line(line)


def test_chunks_leave_bad_and_blank_lines_out_consistently(tmp_path: Path) -> None:
    good = json.dumps(GOOD)
    path = write(tmp_path / "m.jsonl", [good, "oops", good, "", good, good, "[]", good])
    bad: list[tuple[int, str]] = []
    chunks = list(read_chunks(path, Chunking(2), parse_line, lambda n, why: bad.append((n, why))))
    assert [(c.offset, list(c.lines), c.last_line) for c in chunks] == [
        (0, [1, 3], 3),
        (1, [5, 6], 6),
        (2, [8], 8),
    ]
    assert [n for n, _ in bad] == [2, 7]
    again = list(read_chunks(path, Chunking(2), parse_line, lambda n, why: None))
    assert [c.records for c in again] == [c.records for c in chunks]


def test_invalid_utf8_is_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"content": "\xff"}\n{"content": "ok"}\n')
    bad: list[int] = []
    chunks = list(read_chunks(path, Chunking(10), parse_line, lambda n, why: bad.append(n)))
    assert bad == [1] and [list(c.lines) for c in chunks] == [[2]]


def test_default_load_id_follows_content_and_chunking_not_the_path(tmp_path: Path) -> None:
    path = write(tmp_path / "memories.jsonl", [json.dumps(GOOD)])
    load_id = load_id_of(path, Chunking(), MEMORIES)
    moved = tmp_path / "elsewhere" / "renamed.jsonl"
    moved.parent.mkdir()
    path.rename(moved)
    assert load_id_of(moved, Chunking(), MEMORIES) == load_id  # a moved file is the same load
    assert load_id_of(moved, Chunking(100), MEMORIES) != load_id
    assert load_id_of(moved, Chunking(bytes=1 << 20), MEMORIES) != load_id
    # Into another place (a table, a namespace) is another load.
    into_a = load_id_of(moved, Chunking(), MEMORIES, {"table": "a"})
    assert into_a != load_id != load_id_of(moved, Chunking(), MEMORIES, {"table": "b"}) != into_a
    write(moved, [json.dumps({**GOOD, "content": "likes coffee"})])
    assert load_id_of(moved, Chunking(), MEMORIES) != load_id  # regenerated: another load
    assert load_id.startswith("memories-") and len(load_id) <= 128


def test_default_load_id_reads_the_file_in_blocks(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"x" * (32 << 20))
    tracemalloc.start()
    try:
        load_id_of(path, Chunking(), MEMORIES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # a 32 MiB file, hashed in a few MiB at most


def record_line(i: int, kib: int) -> str:
    return json.dumps({"content": f"{i}:" + "c" * (kib << 10)})


def test_chunks_are_capped_by_encoded_bytes_too(tmp_path: Path) -> None:
    # 3 KiB records under a 10 KiB cap: three to a chunk, never more, the same on every read.
    path = write(tmp_path / "m.jsonl", [record_line(i, 3) for i in range(10)] + ["oops", ""])
    chunking = Chunking(records=500, bytes=10 << 10)
    chunks = list(read_chunks(path, chunking, parse_line, lambda n, why: None))
    assert [list(c.lines) for c in chunks] == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
    assert [c.last_line for c in chunks] == [3, 6, 9, 12]
    for c in chunks:
        message = message_of(c)
        assert message.ByteSize() <= chunking.bytes
    assert [c.offset for c in read_chunks(path, chunking, parse_line, lambda n, why: None)] == [
        0,
        1,
        2,
        3,
    ]


def test_default_chunks_of_large_records_fit_a_server_message(tmp_path: Path) -> None:
    """500 records of 136 KiB are more than the 64 MiB a server takes in one message."""
    path = write(tmp_path / "m.jsonl", [record_line(i, 136) for i in range(500)])
    sizes = [
        message_of(c).ByteSize()
        for c in read_chunks(path, Chunking(), parse_line, lambda n, why: None)
    ]
    assert sum(sizes) > Settings().max_message_bytes
    assert max(sizes) <= Chunking().bytes < Settings().max_message_bytes


def test_a_record_larger_than_a_chunk_is_a_bad_line(tmp_path: Path) -> None:
    path = write(tmp_path / "m.jsonl", [record_line(0, 1), record_line(1, 20), record_line(2, 1)])
    bad: list[tuple[int, str]] = []
    chunking = Chunking(bytes=10 << 10)
    chunks = list(read_chunks(path, chunking, parse_line, lambda n, why: bad.append((n, why))))
    assert [list(c.lines) for c in chunks] == [[1, 3]]
    assert [n for n, _ in bad] == [2] and "more than a whole chunk (10240 bytes)" in bad[0][1]


def test_prefetch_gives_every_item_in_order_and_raises_the_threads_error() -> None:
    ahead = Prefetch(iter(range(100)), depth=2)
    assert list(ahead) == list(range(100))
    ahead.close()

    def failing() -> Iterator[int]:
        yield 1
        raise BadLine("broken")

    ahead = Prefetch(failing())
    with pytest.raises(BadLine, match="broken"):
        list(ahead)
    ahead.close()


def test_prefetch_closed_before_the_end_stops_its_thread() -> None:
    ahead = Prefetch(itertools.count(), depth=2)
    assert next(iter(ahead)) == 0
    ahead.close()  # returns: the thread saw the stop flag instead of waiting on a full queue
    assert len(list(ahead)) <= 2  # a reader after close gets what was queued, then the end
