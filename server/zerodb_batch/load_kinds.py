"""The kinds of file `zerodb-batch load` streams: how a JSON line becomes a record, which RPC the
records go through, and the command line of each (`load memories FILE ...`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import struct_pb2

from zerodb.v1 import memory_pb2, table_pb2
from zerodb_batch.loader import BadLine, Kind


@dataclass(frozen=True)
class LoadCommand:
    """`zerodb-batch load <kind.name>`: the kind, and the arguments it adds to the common ones."""

    kind: Kind
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda _: None
    fields: Callable[[argparse.Namespace], dict[str, str]] = field(default=lambda _: {})


def json_object(text: str) -> dict[str, Any]:
    """A line as a JSON object; BadLine says why it is not one."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadLine(f"not JSON ({e.msg} at column {e.colno})") from e
    if not isinstance(obj, dict):
        raise BadLine("not a JSON object")
    return obj


def typed(obj: dict[str, Any], name: str, kind: Any, expected: str) -> Any:
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadLine(f"{name} must be {expected}")
    return value


def known_only(obj: dict[str, Any], known: frozenset[str]) -> None:
    if unknown := sorted(obj.keys() - known):
        raise BadLine(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


_MEMORY_TEXT = ("id", "content", "memory_type", "session_id", "agent_id", "entity_id")
_MEMORY_KEYS = frozenset((*_MEMORY_TEXT, "importance", "tags", "metadata"))


def parse_memory(text: str) -> memory_pb2.Memory:
    """One JSON object with the seed's record keys; BadLine says what is wrong."""
    obj = json_object(text)
    known_only(obj, _MEMORY_KEYS)
    memory = memory_pb2.Memory()
    for name in _MEMORY_TEXT:
        if obj.get(name) is not None:
            setattr(memory, name, typed(obj, name, str, "a string"))
    if obj.get("importance") is not None:
        memory.importance = typed(obj, "importance", (int, float), "a number")
    if obj.get("tags") is not None:
        tags = typed(obj, "tags", list, "a list of strings")
        if not all(isinstance(tag, str) for tag in tags):
            raise BadLine("tags must be a list of strings")
        memory.tags.extend(tags)
    if obj.get("metadata") is not None:
        memory.metadata.update(typed(obj, "metadata", dict, "a JSON object"))
    return memory


MEMORIES = Kind(
    name="memories",
    method="/zerodb.v1.MemoryService/StreamUpsertMemories",
    request_type=memory_pb2.StreamUpsertMemoriesRequest,
    response_type=memory_pb2.StreamUpsertMemoriesResponse,
    records_field="records",
    parse_line=parse_memory,
)


def parse_row(text: str) -> struct_pb2.Struct:
    """One JSON object: a row's data, as it is."""
    row = struct_pb2.Struct()
    row.update(json_object(text))  # what the server refuses (NaN, too deep) it reports by line
    return row


ROWS = Kind(
    name="rows",
    method="/zerodb.v1.TableService/StreamInsertRows",
    request_type=table_pb2.StreamInsertRowsRequest,
    response_type=table_pb2.StreamInsertRowsResponse,
    records_field="rows",
    parse_line=parse_row,
)


def _table_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="the existing table to insert into")


COMMANDS = (
    LoadCommand(
        MEMORIES,
        "stream a JSON-lines file of memories (the upsert's keys: id, content, memory_type, "
        "importance, tags, metadata, session_id, agent_id, entity_id)",
    ),
    LoadCommand(
        ROWS,
        "stream a JSON-lines file of table rows (each line one row's JSON object) into TABLE",
        add_arguments=_table_argument,
        fields=lambda args: {"table": args.table},
    ),
)
