"""Every pattern the `$regex` check accepts compiles in PostgreSQL (with the "C" collation the
queries use): generated patterns, mostly near-valid ones built from the syntax's pieces, and
random strings of its special characters."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.plugins.tables import Loop
from zerodb_batch.domain.table_regex import RegexError, check_regex

PIECES = [
    "a", "é", "😀", ".", "^", "$", "|", "(", ")", "(?:", "[", "]", "[^", "-", "a-z", "[:alpha:]",
    "[:word:]", "\\d", "\\W", "\\s", "\\.", "\\]", "\\-", "\\t", "*", "+", "?", "*?", "{2}",
    "{0,3}", "{1,}", "{255}", "{2,1}", "{", "}", ",",
]  # fmt: skip
patterns = st.lists(st.sampled_from(PIECES), max_size=12).map("".join) | st.text(
    "ab.^$|()[]{}*+?\\-,:09dDsSwWtn^é", max_size=16
)


def compiles(aloop: Loop, pattern: str) -> None:
    """Raise if PostgreSQL refuses the pattern as our queries apply it."""
    query = "SELECT 'abc' COLLATE \"C\" ~ %s::text"
    aloop.run(aloop.conn.execute(query, (pattern,), prepare=False))


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(pattern=patterns)
@example(pattern="(a{100}){100}")  # the largest sizes the check allows
@example(pattern="((a{10}){10}){100}")
@example(pattern="x" * 512)
@example(pattern="[[:alpha:][:digit:]\\d\\s\\w\\]\\[-]+?")
@example(pattern="(?:a|)|^$")
def test_whatever_the_check_accepts_compiles(aloop: Loop, pattern: str) -> None:
    try:
        check_regex(pattern)
    except RegexError:
        return
    try:
        compiles(aloop, pattern)
    except psycopg.errors.InvalidRegularExpression as e:
        pytest.fail(f"accepted {pattern!r}, which PostgreSQL refuses: {e}")
