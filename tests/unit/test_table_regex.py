"""Which `$regex` patterns the checker accepts. That PostgreSQL compiles every accepted one is
tested against PostgreSQL itself in tests/integration/test_table_regex_postgres.py."""

from __future__ import annotations

import pytest

from zerodb_batch.domain.table_regex import RegexError, check_regex

ACCEPTED = [
    "", "abc", "^a.*b$", "a|b|", "(a|b)+", "(?:ab)*?", "a{2}", "a{2,}", "a{0,255}?", "a??",
    "[abc]", "[^a-z0-9_]", "[-a]", "[a-]", "[[:alpha:][:digit:]]", "[\\d\\s\\w]", "[\\]\\[\\\\]",
    "\\d\\D\\s\\S\\w\\W", "\\.\\*\\+\\?\\(\\)\\{\\}\\|\\^\\$\\/\\-", "\\t\\n\\r", "é😀", "()",
    "(a{100}){100}", "((a{10}){10}){100}", "x" * 512, "(?:a|)|^$",
]  # fmt: skip

REFUSED = {
    "a(b": "unbalanced '('",
    "a)b": "unbalanced ')'",
    "*a": "quantifier must follow",
    "a**": "cannot follow another quantifier",
    "a{2}{3}": "cannot follow another quantifier",
    "^*": "quantifier must follow",
    "(*a)": "quantifier must follow",
    "a{256}": "from 0 to 255",
    "a{3,2}": "m <= n",
    "a{,3}": "from 0 to 255",
    "a{1": "unexpected end",
    "a{1x}": "{m}, {m,} or {m,n}",
    "a]": "escape a literal",
    "a}": "escape a literal",
    "{": "quantifier must follow",
    "[]a]": "empty bracket",
    "[^]": "empty bracket",
    "[z-a]": "reversed",
    "[a-\\d]": "between two plain characters",
    "[\\d-z]": "first or last",
    "[[.a.]]": "escape a literal '['",
    "[[:nope:]]": "unknown character class",
    "[a[b]": "escape a literal '['",
    "[\\D]": "unsupported escape",
    "[abc": "unexpected end",
    "(?i)a": "only '(?:'",
    "(?=a)": "only '(?:'",
    "(?!a)": "only '(?:'",
    "\\1": "unsupported escape",
    "\\b": "unsupported escape",
    "\\m": "unsupported escape",
    "\\x41": "unsupported escape",
    "\\u0041": "unsupported escape",
    "ab\\": "unexpected end",
    "(a{255}){255}": "too complex",
    "x" * 513: "at most 512 characters",
    "a\x00": "NUL",
}


@pytest.mark.parametrize("pattern", ACCEPTED)
def test_accepted(pattern: str) -> None:
    check_regex(pattern)


@pytest.mark.parametrize(("pattern", "reason"), REFUSED.items(), ids=list(map(repr, REFUSED)))
def test_refused_with_a_reason(pattern: str, reason: str) -> None:
    with pytest.raises(RegexError) as caught:
        check_regex(pattern)
    assert reason in str(caught.value)
