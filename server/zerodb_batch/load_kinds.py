"""The kinds of file `zerodb-batch load` streams: how a JSON line becomes a record, which RPC the
records go through, and the command line of each (`load memories FILE ...`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from google.protobuf import struct_pb2
from google.protobuf.message import Message

from zerodb.v1 import memory_pb2, rlhf_pb2, table_pb2, vector_pb2
from zerodb_batch.loader import BadLine, Kind

M = TypeVar("M", bound=Message)


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


def fill(message: M, obj: dict[str, Any], texts: tuple[str, ...], numbers: tuple[str, ...]) -> M:
    """Set the message's fields from a JSON object: `texts` and `numbers` by name, `tags` and
    `metadata` where present. A null is the same as an absent key; BadLine for a wrong type."""
    for name in texts:
        if obj.get(name) is not None:
            setattr(message, name, typed(obj, name, str, "a string"))
    for name in numbers:
        if obj.get(name) is not None:
            setattr(message, name, typed(obj, name, (int, float), "a number"))
    if obj.get("tags") is not None:
        tags = typed(obj, "tags", list, "a list of strings")
        if not all(isinstance(tag, str) for tag in tags):
            raise BadLine("tags must be a list of strings")
        getattr(message, "tags").extend(tags)  # noqa: B009 - every record kind with tags
    if obj.get("metadata") is not None:
        getattr(message, "metadata").update(typed(obj, "metadata", dict, "a JSON object"))  # noqa: B009
    return message


_MEMORY_TEXT = ("id", "content", "memory_type", "session_id", "agent_id", "entity_id")
_MEMORY_KEYS = frozenset((*_MEMORY_TEXT, "importance", "tags", "metadata"))


def parse_memory(text: str) -> memory_pb2.Memory:
    """One JSON object with the seed's record keys; BadLine says what is wrong.

    The metadata goes as JSON text (`metadata_json`): neither side builds a Struct. A line is
    parsed once, by orjson, and the record is made in one call from its keys; only a line that
    call refuses (a wrong type) is checked field by field, to say what is wrong.
    """
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise BadLine(f"not JSON ({e.msg} at column {e.colno})") from e
    if type(obj) is not dict:
        raise BadLine("not a JSON object")
    metadata = obj.pop("metadata", None)
    if metadata is not None and type(metadata) is not dict:
        raise BadLine("metadata must be a JSON object")
    record = _memory(obj)
    if metadata is not None:
        record.metadata_json = orjson.dumps(metadata).decode()
    return record


def _memory(obj: dict[str, Any]) -> memory_pb2.Memory:
    # bool is an int to protobuf, and the seed's importance is a number: true is refused
    if obj.keys() <= _MEMORY_KEYS and type(obj.get("importance")) is not bool:
        try:
            return memory_pb2.Memory(**obj)
        except (TypeError, ValueError):
            pass  # a wrong type: fill() says which field
    known_only(obj, _MEMORY_KEYS)
    return fill(memory_pb2.Memory(), obj, _MEMORY_TEXT, ("importance",))


_INTERACTION_TEXT = (
    "prompt", "response", "feedback", "model", "session_id", "agent_id", "human_feedback",
    "context",
)  # fmt: skip
# `id` and `create_time` are the server's: accepted (so a jsonl export loads back) and ignored.
_INTERACTION_KEYS = frozenset(
    (*_INTERACTION_TEXT, "reward", "tags", "metadata", "id", "create_time")
)


def parse_interaction(text: str) -> rlhf_pb2.Interaction:
    """One JSON object with the interaction keys of the seed and of a jsonl export."""
    obj = json_object(text)
    known_only(obj, _INTERACTION_KEYS)
    return fill(rlhf_pb2.Interaction(), obj, _INTERACTION_TEXT, ("reward",))


MEMORIES = Kind(
    name="memories",
    method="/zerodb.v1.MemoryService/StreamUpsertMemories",
    request_type=memory_pb2.StreamUpsertMemoriesRequest,
    response_type=memory_pb2.StreamUpsertMemoriesResponse,
    records_field="records",
    parse_line=parse_memory,
)

INTERACTIONS = Kind(
    name="interactions",
    method="/zerodb.v1.RlhfService/StreamCreateInteractions",
    request_type=rlhf_pb2.StreamCreateInteractionsRequest,
    response_type=rlhf_pb2.StreamCreateInteractionsResponse,
    records_field="interactions",
    parse_line=parse_interaction,
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


_VECTOR_TEXT = ("id", "vector_id", "namespace", "document")
_VECTOR_KEYS = frozenset((*_VECTOR_TEXT, "vector_embedding", "metadata", "vector_metadata"))


def parse_vector(text: str) -> vector_pb2.Vector:
    """One JSON object with the upsert's keys (the live API's `vector_id` / `vector_metadata`
    too); the embedding a list of numbers."""
    obj = json_object(text)
    known_only(obj, _VECTOR_KEYS)
    vector = fill(vector_pb2.Vector(), obj, _VECTOR_TEXT, ())
    if obj.get("vector_metadata") is not None:
        vector.vector_metadata.update(typed(obj, "vector_metadata", dict, "a JSON object"))
    embedding = (
        typed(obj, "vector_embedding", list, "a list of numbers")
        if ("vector_embedding" in obj)
        else []
    )
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in embedding):
        raise BadLine("vector_embedding must be a list of numbers")
    vector.vector_embedding.extend(embedding)
    return vector


VECTORS = Kind(
    name="vectors",
    method="/zerodb.v1.VectorService/StreamUpsertVectors",
    request_type=vector_pb2.StreamUpsertVectorsRequest,
    response_type=vector_pb2.StreamUpsertVectorsResponse,
    records_field="vectors",
    parse_line=parse_vector,
)


def _namespace_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace", default="", help="namespace of the vectors whose line names none (default)"
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
        INTERACTIONS,
        "stream a JSON-lines file of RLHF interactions (prompt, response, feedback, reward, "
        "model, session_id, agent_id, human_feedback, tags, context, metadata; a jsonl export "
        "loads back)",
    ),
    LoadCommand(
        ROWS,
        "stream a JSON-lines file of table rows (each line one row's JSON object) into TABLE",
        add_arguments=_table_argument,
        fields=lambda args: {"table": args.table},
    ),
    LoadCommand(
        VECTORS,
        "stream a JSON-lines file of vectors (id, vector_embedding, namespace, metadata, "
        "document; or vector_id, vector_metadata)",
        add_arguments=_namespace_argument,
        fields=lambda args: {"namespace": args.namespace},
    ),
)
