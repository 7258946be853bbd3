"""API-key authentication and who may call what; anything not known to be safe is refused.

Every RPC of the `zerodb.*` services takes a key (`x-api-key`, or `authorization: Bearer`) and a
request naming the key's project, and needs the scope that RPC_SCOPES gives it (`read`, `write`
or `admin`). Health checks and reflection are open. Any other method, an RPC whose request type
has no `project_id` (so could not be scoped to a project), and an RPC missing from RPC_SCOPES are
refused: the policy fails closed, so an RPC added without thought for access is not callable by
accident.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor

from zerodb_batch.errors import InvalidArgument, PermissionDenied, Unauthenticated, Violation
from zerodb_batch.storage import keys
from zerodb_batch.storage.pool import Database

_CACHE_MAX = 10_000
_OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)
_SCOPED_PACKAGE = "zerodb."

# The scope each RPC needs, by its full name. An RPC of the API missing here cannot be called
# (tests/unit/test_scopes.py walks the descriptors so that a new RPC without a line fails there).
# Reading a stream with a consumer group, and acknowledging what it delivered, is reading: the
# group's bookkeeping changes, the project's data does not. Making and dropping tables is `admin`.
RPC_SCOPES: dict[str, str] = {
    "zerodb.v1.TableService.CreateTable": "admin",
    "zerodb.v1.TableService.DeleteTable": "admin",
    "zerodb.v1.TableService.ListTables": "read",
    "zerodb.v1.TableService.BatchQuery": "read",  # and `write` for a batch that writes (below)
    "zerodb.v1.TableService.StreamInsertRows": "write",
    "zerodb.v1.MemoryService.BatchUpsertMemories": "write",
    "zerodb.v1.MemoryService.BatchUpdateMemories": "write",
    "zerodb.v1.MemoryService.BatchDeleteMemories": "write",
    "zerodb.v1.MemoryService.BatchGetMemories": "read",
    "zerodb.v1.MemoryService.ListMemories": "read",
    "zerodb.v1.MemoryService.StreamUpsertMemories": "write",
    "zerodb.v1.VectorService.BatchUpsertVectors": "write",
    "zerodb.v1.VectorService.StreamUpsertVectors": "write",
    "zerodb.v1.VectorService.SearchVectors": "read",
    "zerodb.v1.VectorService.BatchGetVectors": "read",
    "zerodb.v1.VectorService.BatchDeleteVectors": "write",
    "zerodb.v1.VectorService.ListNamespaces": "read",
    "zerodb.v1.EventService.BatchPublishEvents": "write",
    "zerodb.v1.EventService.SubscribeEvents": "read",
    "zerodb.v1.EventService.AckEvents": "read",
    "zerodb.v1.EventService.ListEvents": "read",
    "zerodb.v1.RlhfService.BatchCreateInteractions": "write",
    "zerodb.v1.RlhfService.StreamCreateInteractions": "write",
    "zerodb.v1.RlhfService.ListInteractions": "read",
    "zerodb.v1.RlhfService.ExportInteractions": "read",
    "zerodb.v1.LoadService.GetLoad": "read",
}
_READING_TABLE_OPS = ("", "query", "count")


def _batch_query_scope(request: Any) -> str:
    """A BatchQuery with any operation other than a read needs `write` (an unknown `op` too:
    what is not known to only read is treated as writing)."""
    reads = all(op.op in _READING_TABLE_OPS for op in request.operations)
    return "read" if reads else "write"


# RPCs whose scope depends on the request: checked on each decoded message.
_REQUEST_SCOPES: dict[str, Callable[[Any], str]] = {
    "zerodb.v1.TableService.BatchQuery": _batch_query_scope,
}


@dataclass(frozen=True)
class Access:
    """How a method may be called: open (no key), scoped to the key's project, or not at all."""

    method: str
    scoped: bool
    refusal: str = ""  # why the method is closed, if it is
    scope: str = ""  # what a key needs to call it (scoped methods)

    @classmethod
    def of(cls, method: str, client_streaming: bool, server_streaming: bool) -> Access:
        service = method.strip("/").rpartition("/")[0]
        if service in _OPEN_SERVICES:
            return cls(method, scoped=False)
        if not service.startswith(_SCOPED_PACKAGE):
            return cls(method, scoped=True, refusal="it is not part of this API")
        if client_streaming and server_streaming:
            return cls(method, scoped=True, refusal="bidirectional streams are not served")
        if not _has_project(method):
            return cls(method, scoped=True, refusal="its request names no project_id")
        scope = RPC_SCOPES.get(_full_name(method))
        if scope is None:
            return cls(method, scoped=True, refusal="no scope is declared for it")
        return cls(method, scoped=True, scope=scope)

    def refuse_if_closed(self) -> None:
        if self.refusal:
            raise PermissionDenied(
                f"{self.method} cannot be called: {self.refusal}", reason="METHOD_NOT_ALLOWED"
            )

    def check_scope(self, grant: keys.Grant, request: Any = None) -> None:
        """PERMISSION_DENIED (SCOPE_MISSING) unless the key has the scope this call needs: the
        method's own, or with `request`, the one that request needs."""
        needed = self.scope
        by_request = _REQUEST_SCOPES.get(_full_name(self.method))
        if request is not None and by_request is not None:
            needed = by_request(request)
        if needed not in grant.scopes:
            raise PermissionDenied(
                f"the API key lacks the {needed!r} scope that {self.method} needs "
                f"(its scopes: {', '.join(grant.scopes)})",
                reason="SCOPE_MISSING",
                metadata={"required_scope": needed, "key_scopes": ",".join(grant.scopes)},
            )


def _full_name(method: str) -> str:
    return method.strip("/").replace("/", ".")


def _has_project(method: str) -> bool:
    """Whether the method's request type has a string `project_id` to scope it by."""
    try:
        found = descriptor_pool.Default().FindMethodByName(_full_name(method))
    except KeyError:
        return False
    project = found.input_type.fields_by_name.get("project_id")
    return project is not None and project.type == FieldDescriptor.TYPE_STRING


def api_key_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The key sent in `x-api-key`, or as `authorization: Bearer <key>` (what many SDKs send)."""
    found = dict(metadata or ())
    key = found.get("x-api-key")
    if not key:
        auth = found.get("authorization", "")
        if isinstance(auth, str) and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
    if not key:
        raise Unauthenticated(
            "missing API key: send it in the x-api-key header", reason="API_KEY_MISSING"
        )
    return key if isinstance(key, str) else key.decode()


class Authenticator:
    """Resolves keys to what they grant, trusting a lookup for `cache_seconds` (the longest a
    revoked key keeps working). Expiry is checked at every call, cached or not."""

    def __init__(self, db: Database, cache_seconds: float) -> None:
        self._db = db
        self._ttl = cache_seconds
        self._cache: dict[bytes, tuple[keys.Grant, float]] = {}

    async def grant_of(self, key: str) -> keys.Grant:
        grant = await self._lookup(key)
        if grant.expire_time is not None and grant.expired():
            when = grant.expire_time.astimezone(UTC)
            raise Unauthenticated(
                f"the API key expired at {when:%Y-%m-%dT%H:%M:%SZ}", reason="API_KEY_EXPIRED"
            )
        return grant

    async def _lookup(self, key: str) -> keys.Grant:
        digest = keys.hash_key(key)
        hit = self._cache.get(digest)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        async with self._db.connection() as conn:
            grant = await keys.grant_of(conn, key)
        if grant is None:
            raise Unauthenticated("the API key is not valid (unknown or revoked)")
        if self._ttl > 0:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = (grant, time.monotonic() + self._ttl)
        return grant


def check_project(key_project: str, request: object) -> None:
    """The request must name the key's project (every scoped request type has project_id)."""
    requested: str = getattr(request, "project_id")  # noqa: B009
    if not requested:
        raise InvalidArgument(
            "project_id is required",
            violations=[Violation("project_id", "is required", "REQUIRED")],
        )
    if requested != key_project:
        raise PermissionDenied(
            f"the API key does not grant access to project {requested!r}",
            reason="PROJECT_MISMATCH",
            metadata={"project_id": requested},
        )
