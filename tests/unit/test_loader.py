"""The loader's file handling: line parsing and deterministic chunking (no server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zerodb_batch.loader import BadLine, default_load_id, parse_line, read_chunks

GOOD = {
    "content": "likes tea",
    "memory_type": "semantic",
    "importance": 0.8,
    "tags": ["pref"],
    "metadata": {"source": "chat", "n": 1},
    "session_id": "s1",
}


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_parse_line_takes_the_seed_record_keys() -> None:
    memory = parse_line(json.dumps({**GOOD, "id": "m1", "agent_id": "a", "entity_id": "e"}))
    assert (memory.id, memory.content, memory.memory_type) == ("m1", "likes tea", "semantic")
    assert (memory.importance, list(memory.tags), memory.session_id) == (0.8, ["pref"], "s1")
    assert dict(memory.metadata) == {"source": "chat", "n": 1}
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
    chunks = list(read_chunks(path, 2, lambda n, why: bad.append((n, why))))
    assert [(c.offset, list(c.lines), c.last_line) for c in chunks] == [
        (0, [1, 3], 3),
        (1, [5, 6], 6),
        (2, [8], 8),
    ]
    assert [n for n, _ in bad] == [2, 7]
    again = list(read_chunks(path, 2, lambda n, why: None))
    assert [c.records for c in again] == [c.records for c in chunks]


def test_invalid_utf8_is_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"content": "\xff"}\n{"content": "ok"}\n')
    bad: list[int] = []
    chunks = list(read_chunks(path, 10, lambda n, why: bad.append(n)))
    assert bad == [1] and [list(c.lines) for c in chunks] == [[2]]


def test_default_load_id_is_stable_per_file_and_chunking(tmp_path: Path) -> None:
    path = write(tmp_path / "memories.jsonl", [])
    assert default_load_id(path, 500) == default_load_id(tmp_path / "." / "memories.jsonl", 500)
    assert default_load_id(path, 500) != default_load_id(path, 100)
    assert default_load_id(path, 500).startswith("memories-")
