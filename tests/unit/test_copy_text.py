"""COPY text rows: how a chunk's rows are cut into writes (their values round-trip through
PostgreSQL in tests/api/test_memory_stream.py)."""

from __future__ import annotations

from zerodb_batch.storage.copy_text import field
from zerodb_batch.storage.memories import MemoryCopyRows


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
