"""An entity's validation rules, declared once; the fast path and the full report both come from it.

Every write validates every record, and almost every record is valid. So the rules of an entity
compile, once at import, into one function (`Rules.fast`) that reads each field of a record once
and applies the cheap checks inline: it returns the record's values ready to store, or None when
a check fails or is in doubt (content longer in characters than a quarter of its byte limit, say).
Only then does `Rules.check` run the same rules through a `Checker`, which decides exactly and
names every violation by its path. Both come from the one declaration, so they cannot disagree
about what a field is or allows; the generated code is plain Python, printed by `Rules.source`.

A rule describes its fast path as small source snippets over a local variable (`v` below):
`read` puts the field in `v`, `bad` is true when a cheap check fails, `scanned` adds the value to
the one NUL scan of all text fields, `late` computes an expensive value only once the cheap checks
passed (None means "in doubt"), and `stored` is what goes to the database.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from zerodb_batch import limits
from zerodb_batch.domain import json_text, struct_json
from zerodb_batch.domain.validate import Checker

Values = tuple[Any, ...]


class Rule:
    """One field of a record: its full check and the snippets of its fast path."""

    def __init__(self, name: str) -> None:
        self.name = name

    def check(self, c: Checker, record: Any) -> object:
        """The value to store, after adding any violation of the field to `c`."""
        raise NotImplementedError

    def read(self, v: str) -> str:
        return f"{v} = r.{self.name}"

    def bad(self, v: str) -> str | None:
        return None

    def scanned(self, v: str) -> str | None:
        return None

    def late(self, v: str) -> str | None:
        return None

    def stored(self, v: str) -> str:
        return v

    def constants(self, v: str) -> dict[str, object]:
        return {}

    def for_fields(self, names: Collection[str]) -> Rule:
        """This rule for a message that has only the fields `names` (a memory update has no
        metadata_json): the alternatives it lacks are dropped."""
        rule = copy.copy(self)
        for alternative in ("alias", "text"):
            if getattr(rule, alternative, None) not in (None, *names):
                setattr(rule, alternative, None)
        return rule


class Text(Rule):
    """An identifier-like string: at most `max_chars` characters, no NUL. With `alias`, another
    field of the record may carry it instead (the live API's spelling); both set and different
    is a violation of the alias."""

    def __init__(
        self,
        name: str,
        max_chars: int = limits.MAX_ID_CHARS,
        *,
        required: bool = False,
        alias: str | None = None,
    ) -> None:
        super().__init__(name)
        self.max_chars, self.required, self.alias = max_chars, required, alias

    def check(self, c: Checker, record: Any) -> object:
        value: str = getattr(record, self.name)
        if self.alias and (other := getattr(record, self.alias)):
            if value and other != value:
                conflict = f"conflicts with {self.name} {value!r}; set one"
                c.add(self.alias, conflict, "ALIAS_CONFLICT")
            value = value or other
        c.text(self.name, value, self.max_chars, required=self.required)
        return value

    def read(self, v: str) -> str:
        return f"{v} = r.{self.name}" + (f" or r.{self.alias}" if self.alias else "")

    def bad(self, v: str) -> str:
        test = f"len({v}) > {self.max_chars}" + (f" or not {v}" if self.required else "")
        return test + (f" or (r.{self.alias} and r.{self.alias} != {v})" if self.alias else "")

    def scanned(self, v: str) -> str:
        return v


class TextOrMember(Text):
    """A Text that, left empty, takes the string at `key` of the record's Struct field `struct`
    (the seed logs an interaction's model as `metadata.model`); a violation of the value taken
    from there names that member."""

    def __init__(self, name: str, max_chars: int, *, struct: str, key: str) -> None:
        super().__init__(name, max_chars)
        self.struct, self.key = struct, key

    def check(self, c: Checker, record: Any) -> object:
        if value := getattr(record, self.name):
            c.text(self.name, value, self.max_chars)
            return value
        value = struct_json.string_member(getattr(record, self.struct), self.key)
        c.text(f"{self.struct}.{self.key}", value, self.max_chars)
        return value

    def read(self, v: str) -> str:
        return f"{v} = r.{self.name} or {v}_member(r.{self.struct}, {self.key!r})"

    def constants(self, v: str) -> dict[str, object]:
        return {f"{v}_member": struct_json.string_member}


class Body(Rule):
    """A free text measured in UTF-8 bytes, no NUL."""

    def __init__(self, name: str, max_bytes: int, *, required: bool = False) -> None:
        super().__init__(name)
        self.max_bytes, self.required = max_bytes, required

    def check(self, c: Checker, record: Any) -> object:
        value: str = getattr(record, self.name)
        if self.required and not value:
            c.add(self.name, "is required", "REQUIRED")
        c.body(self.name, value, self.max_bytes)
        return value

    def bad(self, v: str) -> str:
        # A character is at most 4 bytes: a string this short cannot be over the byte limit.
        return f"len({v}) > {self.max_bytes // 4}" + (f" or not {v}" if self.required else "")

    def scanned(self, v: str) -> str:
        return v


class Choice(Rule):
    """One of a fixed set of strings that users type; empty means `default` (None: NULL)."""

    def __init__(self, name: str, allowed: Sequence[str], default: str | None) -> None:
        super().__init__(name)
        self.allowed, self.default = tuple(allowed), default

    def check(self, c: Checker, record: Any) -> object:
        value: str = getattr(record, self.name)
        if value:
            c.choice(self.name, value, self.allowed)
        return value or self.default

    def bad(self, v: str) -> str:
        return f"({v} and {v} not in {v}_allowed)"

    def stored(self, v: str) -> str:
        return f"{v} or {v}_default"

    def constants(self, v: str) -> dict[str, object]:
        return {f"{v}_allowed": frozenset(self.allowed), f"{v}_default": self.default}


class Number(Rule):
    """An `optional double` from `low` to `high`; unset means `default` (None: NULL)."""

    def __init__(self, name: str, low: float, high: float, default: float | None) -> None:
        super().__init__(name)
        self.low, self.high, self.default = low, high, default

    def check(self, c: Checker, record: Any) -> object:
        if not record.HasField(self.name):
            return self.default
        value: float = getattr(record, self.name)
        c.unit_interval(self.name, value, self.low, self.high)
        return value

    def read(self, v: str) -> str:
        # HasField only for a zero: one call saved for almost every record.
        return (
            f"{v} = r.{self.name}\n"
            f"    if {v} == 0.0 and not r.HasField({self.name!r}): {v} = {v}_default"
        )

    def bad(self, v: str) -> str:
        in_range = f"{self.low!r} <= {v} <= {self.high!r}"  # also false for NaN
        return (
            f"not {in_range}"
            if self.default is not None
            else f"({v} is not None and not {in_range})"
        )

    def constants(self, v: str) -> dict[str, object]:
        return {f"{v}_default": self.default}


class Tags(Rule):
    """At most MAX_TAGS tags of 1 to MAX_TAG_CHARS characters."""

    def check(self, c: Checker, record: Any) -> object:
        value = list(getattr(record, self.name))
        c.tags(self.name, value)
        return value

    def read(self, v: str) -> str:
        return f"{v} = r.{self.name}[:]"  # a slice copies in C: half the time of list()

    def bad(self, v: str) -> str:
        return (
            f"({v} and (len({v}) > {limits.MAX_TAGS} or '' in {v}"
            f" or max(map(len, {v})) > {limits.MAX_TAG_CHARS}))"
        )

    def scanned(self, v: str) -> str:
        return f"*{v}"


class Name(Rule):
    """A topic-like name: 1 to `max_chars` of letters, digits, `.`, `_`, `:` and `-`."""

    PATTERN = re.compile(r"[A-Za-z0-9._:\-]+")

    def __init__(self, name: str, max_chars: int) -> None:
        super().__init__(name)
        self.max_chars = max_chars

    def check(self, c: Checker, record: Any) -> object:
        value: str = getattr(record, self.name)
        check_name(c, self.name, value, self.max_chars)
        return value

    def bad(self, v: str) -> str:
        return f"len({v}) > {self.max_chars} or not {v}_pattern({v})"

    def constants(self, v: str) -> dict[str, object]:
        return {f"{v}_pattern": self.PATTERN.fullmatch}


def check_name(checker: Checker, name: str, value: str, max_chars: int) -> None:
    """A topic or consumer group: 1-max characters of letters, digits, `.`, `_`, `:`, `-`."""
    if not value:
        checker.add(name, "is required", "REQUIRED")
    elif len(value) > max_chars:
        checker.add(name, f"at most {max_chars} characters, got {len(value)}", "TOO_LONG")
    elif not Name.PATTERN.fullmatch(value):
        checker.add(
            name, "only letters, digits, '.', '_', ':' and '-' are allowed", "INVALID_CHARACTER"
        )


class JsonObject(Rule):
    """A `google.protobuf.Struct`, stored as JSON text of at most `max_bytes`. With `alias`, as
    in Text: another Struct field may carry it instead. With `text`, the record may send the
    object instead as JSON text in that field (one of the two, not both)."""

    def __init__(
        self, name: str, max_bytes: int, *, alias: str | None = None, text: str | None = None
    ) -> None:
        super().__init__(name)
        self.max_bytes, self.alias, self.text = max_bytes, alias, text

    def check(self, c: Checker, record: Any) -> object:
        # getattr: other messages check their field with this rule (a memory update has no text)
        if self.text and (sent := getattr(record, self.text, "")):
            if record.HasField(self.name):
                c.add(self.text, f"set {self.name} or {self.text}, not both", "CONFLICTING_FIELDS")
            return c.json_text(self.text, sent, self.max_bytes)
        value = getattr(record, self.name)
        if self.alias and record.HasField(self.alias):
            other = getattr(record, self.alias)
            if record.HasField(self.name) and other != value:
                c.add(self.alias, f"conflicts with {self.name}; set one", "ALIAS_CONFLICT")
            elif not record.HasField(self.name):
                value = other
        return c.json_object(self.name, value, self.max_bytes)

    def read(self, v: str) -> str:
        return ""  # the conversion is the costly part: only once the cheap checks passed

    def bad(self, v: str) -> str | None:
        # Any use of the alias goes the full way: the live API's spelling is the rare one.
        return f"r.HasField({self.alias!r})" if self.alias else None

    def late(self, v: str) -> str:
        struct = f"fast_json(r.{self.name}, {self.max_bytes // 4})"
        if not self.text:
            return struct
        text = f"fast_json_text(r.{self.text}, {self.max_bytes // 4})"
        return f"(None if r.HasField({self.name!r}) else {text}) if r.{self.text} else {struct}"

    def constants(self, v: str) -> dict[str, object]:
        return {"fast_json": struct_json.fast_text, "fast_json_text": json_text.fast_text}


class Embedding(Rule):
    """A `repeated float` vector: 1 to `max_dims` finite numbers, not all zero (no direction,
    so no cosine similarity), stored as a float32 array."""

    def __init__(self, name: str, max_dims: int) -> None:
        super().__init__(name)
        self.max_dims = max_dims

    def check(self, c: Checker, record: Any) -> object:
        return check_embedding(c, self.name, getattr(record, self.name), self.max_dims)

    def bad(self, v: str) -> str:
        return f"not 0 < len({v}) <= {self.max_dims}"

    def late(self, v: str) -> str:
        return f"{v}_array({v})"

    def constants(self, v: str) -> dict[str, object]:
        return {f"{v}_array": embedding_or_none}


def embedding_or_none(values: Sequence[float]) -> npt.NDArray[np.float32] | None:
    """The values as float32, or None if one is not finite or all are zero."""
    array = np.array(values, dtype=np.float32)
    return array if array.any() and np.isfinite(array).all() else None


def check_embedding(
    c: Checker, name: str, values: Sequence[float], max_dims: int
) -> npt.NDArray[np.float32]:
    array = np.array(values, dtype=np.float32)
    if not len(array):
        c.add(name, "is required: 1 or more numbers", "REQUIRED")
    elif len(array) > max_dims:
        c.add(name, f"at most {max_dims} dimensions, got {len(array)}", "TOO_MANY_DIMENSIONS")
    elif not (finite := np.isfinite(array)).all():
        at = int(np.argmin(finite))
        c.add(name, f"element {at} is {array[at]}: every number must be finite", "NOT_FINITE")
    elif not array.any():
        c.add(name, "is all zeros: a vector needs a direction", "ZERO_VECTOR")
    return array


class Document(JsonObject):
    """The record itself is the `google.protobuf.Struct` (a table row), stored as JSON text; its
    violations name the record (`rows[3]`). `name` is the column it is stored in."""

    def check(self, c: Checker, record: Any) -> object:
        return c.json_object("", record, self.max_bytes)

    def late(self, v: str) -> str:
        return f"fast_json(r, {self.max_bytes // 4})"


class Rules:
    """The rules of one entity, in the order of the values they produce.

    With `keyed`, the first rule is the record's client-chosen id: a batch refuses duplicates and
    the server generates a UUID for an empty one (see records.RecordParser). With `scope`, ids
    are unique within the value of that rule (a vector's id within its namespace).
    """

    def __init__(
        self, entity: str, *rules: Rule, keyed: bool = False, scope: str | None = None
    ) -> None:
        self.entity = entity
        self.rules = rules
        self.keyed = keyed
        self.scope = [rule.name for rule in rules].index(scope) if scope else None
        self.by_name = {rule.name: rule for rule in rules}
        self.source, namespace = _generate(entity, rules)
        exec(compile(self.source, f"<rules of {entity}>", "exec"), namespace)
        self.fast: Callable[[Any], Values | None] = namespace["fast"]

    def check(self, c: Checker, record: Any) -> Values:
        """Every rule through the checker: the values, valid or not (see `c.violations`)."""
        return tuple(rule.check(c, record) for rule in self.rules)


def _generate(entity: str, rules: Sequence[Rule]) -> tuple[str, dict[str, Any]]:
    names = [f"v{i}" for i in range(len(rules))]
    namespace: dict[str, Any] = {}
    reads, bad, scanned, late = [], [], [], []
    for rule, v in zip(rules, names, strict=True):
        namespace.update(rule.constants(v))
        if read := rule.read(v):
            reads.append(f"    {read}")
        if test := rule.bad(v):
            bad.append(test)
        if scan := rule.scanned(v):
            scanned.append(scan)
        if expensive := rule.late(v):
            late.append(f"    {v} = {expensive}\n    if {v} is None: return None")
    if scanned:
        bad.append(f"'\\x00' in ''.join(({', '.join(scanned)},))")
    stored = ", ".join(rule.stored(v) for rule, v in zip(rules, names, strict=True))
    lines = [
        f"def fast(r):  # {entity}",
        *reads,
        *([f"    if {' or '.join(bad)}: return None"] if bad else []),
        *late,
        f"    return ({stored},)",
    ]
    return "\n".join(lines) + "\n", namespace
