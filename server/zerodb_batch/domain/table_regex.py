"""The regular expressions `$regex` accepts: a subset of PostgreSQL's ARE syntax that PostgreSQL
always compiles, checked here, so that an accepted pattern never fails in SQL.

Python's `re` cannot be the judge: its dialect differs from PostgreSQL's (`\\b`, `\\Z`, `(?P<`,
lookarounds, possessive quantifiers...). The subset, whose meaning is the same in both:

- literals: any character but `^ $ . [ ] ( ) | * + ? { } \\`; those are escaped with `\\`, as is
  any other ASCII punctuation; `\\t \\n \\r`; classes `\\d \\D \\s \\S \\w \\W`;
- `.`, anchors `^` and `$` (start and end of the whole string), groups `( )` and `(?: )`,
  alternation `|`;
- bracket expressions `[abc] [^abc] [a-z] [[:alpha:]]` (items: literal characters, ranges of
  them in code point order, `\\d \\s \\w`, escaped punctuation, POSIX classes; `-` literal only
  first or last; `]`, `[` and `\\` escaped);
- quantifiers `* + ? {m} {m,} {m,n}` (m <= n <= 255), each optionally lazy (`?`), after
  something that can repeat.

Back references, lookarounds, embedded options and PostgreSQL's other escapes (`\\m \\y \\x41`)
are refused. So are patterns over 512 characters, and patterns whose size after expanding
bounded repetitions passes 10,000 (PostgreSQL refuses `(a{255}){255}` as "too complex").
Character classes match ASCII only: patterns are applied with the "C" collation.
"""

from __future__ import annotations

import string
from typing import Final, NoReturn

from zerodb_batch import limits

_SPECIAL: Final = frozenset("^$.[]()|*+?{}\\")
_PUNCTUATION: Final = frozenset(string.punctuation)
_CLASS_ESCAPES: Final = frozenset("dDsSwW")
_BRACKET_CLASS_ESCAPES: Final = frozenset("dsw")
_CHAR_ESCAPES: Final = frozenset("tnr")
_QUANTIFIERS: Final = frozenset("*+?{")
_NAMED_CLASSES: Final = frozenset(
    ("alnum", "alpha", "blank", "cntrl", "digit", "graph", "lower", "print", "punct", "space",
     "upper", "xdigit", "word")
)  # fmt: skip


class RegexError(ValueError):
    """The pattern is outside the accepted subset; the message says where and why."""


def check_regex(pattern: str) -> None:
    """Raise RegexError unless PostgreSQL compiles `pattern` with the meaning described above."""
    if len(pattern) > limits.MAX_REGEX_CHARS:
        raise RegexError(f"at most {limits.MAX_REGEX_CHARS} characters, got {len(pattern)}")
    if "\x00" in pattern:
        raise RegexError("must not contain NUL characters")
    size = _Parser(pattern).parse()
    if size > limits.MAX_REGEX_SIZE:
        raise RegexError(
            f"too complex: {size} steps after expanding repetitions, at most "
            f"{limits.MAX_REGEX_SIZE}"
        )


class _Parser:
    """Recursive descent over the subset; each rule returns the size of what it read."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def parse(self) -> int:
        size = self.alternation()
        if self.i < len(self.text):
            self.fail("unbalanced ')'")
        return size

    def fail(self, reason: str) -> NoReturn:
        raise RegexError(f"{reason} at position {self.i}")

    def peek(self, ahead: int = 0) -> str:
        j = self.i + ahead
        return self.text[j] if j < len(self.text) else ""

    def take(self) -> str:
        c = self.peek()
        if not c:
            self.fail("unexpected end of pattern")
        self.i += 1
        return c

    def alternation(self) -> int:
        size = self.sequence()
        while self.peek() == "|":
            self.i += 1
            size += self.sequence()
        return size

    def sequence(self) -> int:
        size = 0
        while self.peek() not in ("", "|", ")"):
            size += self.piece()
        return size

    def piece(self) -> int:
        size, repeatable = self.atom()
        if self.peek() not in _QUANTIFIERS:
            return size
        if not repeatable:
            self.fail("a quantifier must follow something that can repeat")
        size *= self.quantifier()
        if self.peek() == "?":
            self.i += 1  # lazy
        if self.peek() in _QUANTIFIERS:
            self.fail("a quantifier cannot follow another quantifier")
        return size

    def quantifier(self) -> int:
        """Reads one quantifier; returns how many copies of its atom it may expand to."""
        c = self.take()
        if c != "{":
            return 1
        low = self.count()
        high = low
        if self.peek() == ",":
            self.i += 1
            high = self.count() if self.peek() != "}" else low + 1
            if high < low:
                self.fail("a repetition {m,n} needs m <= n")
        if self.take() != "}":
            self.fail("a repetition is {m}, {m,} or {m,n}")
        return max(high, 1)

    def count(self) -> int:
        start = self.i
        while self.peek().isascii() and self.peek().isdigit():
            self.i += 1
        digits = self.text[start : self.i]
        if not digits or int(digits) > limits.MAX_REGEX_REPEAT:
            self.fail(f"a repetition count is a number from 0 to {limits.MAX_REGEX_REPEAT}")
        return int(digits)

    def atom(self) -> tuple[int, bool]:
        """(size, whether a quantifier may follow)."""
        c = self.take()
        if c == "(":
            return self.group(), True
        if c == "[":
            self.bracket()
            return 1, True
        if c == "\\":
            self.escape(_CLASS_ESCAPES)
            return 1, True
        if c in "^$":
            return 1, False
        if c in "*+?{":
            self.i -= 1
            self.fail("a quantifier must follow something that can repeat")
        if c in "]}":
            self.i -= 1
            self.fail(f"escape a literal {c!r} as '\\{c}'")
        return 1, True  # '.' or a literal character

    def group(self) -> int:
        if self.peek() == "?":
            if self.peek(1) != ":":
                self.fail("only '(?:' groups are supported (no lookarounds or options)")
            self.i += 2
        size = self.alternation()
        if self.peek() != ")":
            self.fail("unbalanced '('")
        self.i += 1
        return max(size, 1)

    def escape(self, classes: frozenset[str]) -> str:
        """Reads what follows a backslash; returns the literal character, or '' for a class."""
        c = self.take()
        if c in classes:
            return ""
        if c in _CHAR_ESCAPES:
            return {"t": "\t", "n": "\n", "r": "\r"}[c]
        if c in _PUNCTUATION:
            return c
        self.i -= 1
        self.fail(f"unsupported escape '\\{c}'")

    def bracket(self) -> None:
        if self.peek() == "^":
            self.i += 1
        items = 0
        while self.peek() != "]":
            self.bracket_item(first=items == 0)
            items += 1
        if items == 0:
            self.fail("an empty bracket expression; escape a literal ']' as '\\]'")
        self.i += 1

    def bracket_item(self, first: bool) -> None:
        c = self.take()
        if c == "[":
            self.named_class()
        elif c == "-":
            if not (first or self.peek() == "]"):
                self.fail("a literal '-' in brackets goes first or last")
        elif c == "\\":
            self.escape(_BRACKET_CLASS_ESCAPES)
        elif self.peek() == "-" and self.peek(1) not in ("]", ""):
            self.i += 1
            self.range_end(c)

    def range_end(self, start: str) -> None:
        end = self.take()
        if end in "[\\-]":
            self.fail("a range runs between two plain characters")
        if ord(end) < ord(start):
            self.fail(f"the range {start}-{end} is reversed")

    def named_class(self) -> None:
        if self.peek() != ":":
            self.fail("escape a literal '[' as '\\['")
        close = self.text.find(":]", self.i + 1)
        name = self.text[self.i + 1 : close] if close > 0 else ""
        if name not in _NAMED_CLASSES:
            self.fail("unknown character class; use [:alpha:], [:digit:], [:space:], ...")
        self.i = close + 2
