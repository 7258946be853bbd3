"""Rows in COPY's text format, formatted as each record is validated and sent in one write.

A streamed chunk is thousands of rows. Formatting each row into a line while its record is in
hand (one f-string, escapes only where a value needs them) costs a fraction of adapting every
value to binary COPY in psycopg's `write_row`, and the connection then sends a few large writes.
PostgreSQL parses the text with the columns' own input functions, as for any literal.
"""

from __future__ import annotations

import copy as shallow
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import LiteralString, Self

from zerodb_batch.storage.pool import Conn

NULL = "\\N"


def field(value: str) -> str:
    """A text value as one COPY field.

    COPY's text format: a backslash escapes; tab, newline and carriage return would end a field
    or row. Texts such as prompts hold newlines more often than not, so the escaping is a chain
    of C-speed `replace` calls, the backslash first (str.translate with a mapping to two-character
    strings runs per character in Python: ~100 times slower on a 1 KB text with a few newlines).
    """
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\t" in value:
        value = value.replace("\t", "\\t")
    if "\n" in value:
        value = value.replace("\n", "\\n")
    if "\r" in value:
        value = value.replace("\r", "\\r")
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

    def since(self, start: int) -> Self:
        """The rows from position `start` on, to be sent on their own."""
        part = shallow.copy(self)
        part.lines = self.lines[start:]
        return part

    async def copy(
        self, conn: Conn, statement: LiteralString, started: Callable[[], object] = lambda: None
    ) -> None:
        """Send the rows with `statement` (a COPY ... FROM STDIN of the kind's columns); `started`
        is called once PostgreSQL has accepted the COPY, as the rows start to go out."""
        async with copy_in(conn, statement) as send:
            started()
            await send(self)


Send = Callable[[CopyLines], Awaitable[None]]


@asynccontextmanager
async def copy_in(conn: Conn, statement: LiteralString) -> AsyncIterator[Send]:
    """An open COPY ... FROM STDIN and a function that sends rows into it as they come, so
    PostgreSQL takes some while the caller makes the next. An error inside aborts the COPY (the
    transaction then rolls back)."""
    async with conn.cursor().copy(statement) as copy:

        async def send(rows: CopyLines) -> None:
            for part in rows.payload():
                await copy.write(part)

        yield send
