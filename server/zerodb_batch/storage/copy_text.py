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


class CopyLines:
    """Rows already formatted as lines of COPY text, and sent in large pieces.

    A kind's subclass formats its records in `add`, with `field` and `text_array` for values that
    may need escaping, and appends each line to `lines`. Columns whose values are only known when
    the rows are sent (the id of the table a load writes to) go in `prefix`, which starts every
    line as it is sent.
    """

    __slots__ = ("lines", "prefix")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.prefix = ""

    def __len__(self) -> int:
        return len(self.lines)

    def payload(self, size: int = 1 << 20) -> Iterator[str]:
        """The rows as COPY data, in pieces of about `size` characters or one line: sending a
        chunk never holds a second copy of all of it."""
        start, length, prefix = 0, 0, self.prefix
        # Every line ends in a newline, so joining with the prefix between lines (one pass, in C)
        # starts every line but the first with it.
        for end, line in enumerate(self.lines, 1):
            length += len(line)
            if length >= size:
                yield prefix + prefix.join(self.lines[start:end])
                start, length = end, 0
        if start < len(self.lines):
            yield prefix + prefix.join(self.lines[start:])
