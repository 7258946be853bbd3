"""Rows in COPY's text format, formatted as each record is validated and sent in one write.

A streamed chunk is thousands of rows. Formatting each row into a line while its record is in
hand (one f-string, escapes only where a value needs them) costs a fraction of adapting every
value to binary COPY in psycopg's `write_row`, and the connection then sends a few large writes.
PostgreSQL parses the text with the columns' own input functions, as for any literal.
"""

from __future__ import annotations

from collections.abc import Iterator

# COPY text format: a backslash escapes; tab, newline and carriage return would end a field or row.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
NULL = "\\N"


def field(value: str) -> str:
    """A text value as one COPY field."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_ESCAPES)
    return value  # the common case: four C-speed scans, no copy


def text_array(items: list[str]) -> str:
    """A text[] literal as one COPY field. Every element is quoted, so none reads as NULL."""
    if not items:
        return "{}"
    if '"' in (every := "".join(items)) or "\\" in every:
        items = [i.replace("\\", "\\\\").replace('"', '\\"') for i in items]
    return field('{"' + '","'.join(items) + '"}')


class MemoryCopyRows:
    """Valid memory records as lines for `memory_copy` and `memory_stage_copy` (same columns)."""

    __slots__ = ("_lines", "_prefix")

    def __init__(self, project_id: str) -> None:
        self._prefix = field(project_id) + "\t"  # the first column of every row
        self._lines: list[str] = []

    def __len__(self) -> int:
        return len(self._lines)

    def add(
        self, index: int, mid: str, content: str, memory_type: str, importance: float,
        tags: list[str], metadata: str, session_id: str, agent_id: str, entity_id: str,
    ) -> None:  # fmt: skip
        # memory_type is one of a fixed set; metadata is JSON text, so its only possible special
        # character is the backslash of a JSON escape.
        # One scan of every text value at once: almost every record has nothing to escape.
        plain = f"{mid}{content}{metadata}{session_id}{agent_id}{entity_id}"
        if "\\" in plain or "\t" in plain or "\n" in plain or "\r" in plain:
            mid, content, metadata = field(mid), field(content), field(metadata)
            session_id, agent_id, entity_id = field(session_id), field(agent_id), field(entity_id)
        self._lines.append(
            f"{self._prefix}{mid}\t{content}\t{memory_type}\t{importance!r}\t{text_array(tags)}\t"
            f"{metadata}\t{session_id or NULL}\t{agent_id or NULL}\t{entity_id or NULL}\n"
        )

    def payload(self, size: int = 1 << 20) -> Iterator[str]:
        """The rows as COPY data, in pieces of about `size` characters or one line: sending a
        chunk never holds a second copy of all of it."""
        start, length = 0, 0
        for end, line in enumerate(self._lines, 1):
            length += len(line)
            if length >= size:
                yield "".join(self._lines[start:end])
                start, length = end, 0
        if start < len(self._lines):
            yield "".join(self._lines[start:])
