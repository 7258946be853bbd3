"""COPY text rows: how a chunk's rows are cut into writes (their values round-trip through
PostgreSQL in tests/api/test_memory_stream.py)."""

from __future__ import annotations

import json
import uuid

from zerodb_batch.storage.copy_text import field
from zerodb_batch.storage.memories import MemoryCopyRows
from zerodb_batch.storage.table_load import RowCopyLines


def rows(n: int) -> MemoryCopyRows:
    out = MemoryCopyRows("p")
    for i in range(n):
        out.add(i, f"id-{i}", "x" * (i % 7), "episodic", 0.5, ["t"], "{}", "", "", "")
    return out


def test_payload_pieces_are_whole_lines_that_make_up_every_row() -> None:
    full = "".join(rows(50).payload())
    assert full.count("\n") == 50 and full.startswith('p\tid-0\t\tepisodic\t0.5\t{"t"}\t{}\t\\N')
    pieces = list(rows(50).payload(size=100))
    assert len(pieces) > 10
    assert all(piece.endswith("\n") for piece in pieces)
    assert "".join(pieces) == full


def test_a_line_longer_than_a_piece_goes_alone() -> None:
    assert [p.count("\n") for p in rows(3).payload(size=1)] == [1, 1, 1]
    assert list(MemoryCopyRows("p").payload()) == []


def test_field_escapes_each_special_character_once() -> None:
    assert field("plain text") == "plain text"
    assert field("a\\b\tc\nd\re") == "a\\\\b\\tc\\nd\\re"
    assert field("\\n") == "\\\\n"  # a backslash and an n, not a newline
    assert field("\n\n\\") == "\\n\\n\\\\"


def test_a_prefix_starts_every_line_of_every_piece() -> None:
    lines = RowCopyLines()
    for i in range(20):
        lines.add(i, json.dumps({"i": i, "path": "C:\\dir"}))
    lines.prefix = "p\t42\t"
    pieces = list(lines.payload(size=200))
    assert len(pieces) > 2
    rows = "".join(pieces).splitlines()
    assert len(rows) == 20 and all(row.startswith("p\t42\t") for row in rows)
    _, _, row_id, data = rows[3].split("\t")
    assert uuid.UUID(row_id).version == 7
    assert data == '{"i": 3, "path": "C:\\\\\\\\dir"}'  # the JSON escape, escaped for COPY
