"""API-key authentication and who may call what; anything not known to be safe is refused.

Every RPC of the `zerodb.*` services takes a key (`x-api-key`, or `authorization: Bearer`) and a
request naming the key's project. Health checks and reflection are open. Any other method, and
any RPC whose request type has no `project_id` (so could not be scoped to a project), is refused:
the policy fails closed, so an RPC added without thought for access is not callable by accident.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Access:
    """How a method may be called: open (no key), scoped to the key's project, or not at all."""

    method: str
    scoped: bool
    refusal: str = ""  # why the method is closed, if it is

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
        return cls(method, scoped=True)

    def refuse_if_closed(self) -> None:
        if self.refusal:
            raise PermissionDenied(
                f"{self.method} cannot be called: {self.refusal}", reason="METHOD_NOT_ALLOWED"
            )


def _has_project(method: str) -> bool:
    """Whether the method's request type has a string `project_id` to scope it by."""
    try:
        found = descriptor_pool.Default().FindMethodByName(method.strip("/").replace("/", "."))
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
    """Resolves keys to projects, trusting a lookup for `cache_seconds` (the revocation delay)."""

    def __init__(self, db: Database, cache_seconds: float) -> None:
        self._db = db
        self._ttl = cache_seconds
        self._cache: dict[bytes, tuple[str, float]] = {}

    async def project_of(self, key: str) -> str:
        digest = keys.hash_key(key)
        hit = self._cache.get(digest)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        async with self._db.connection() as conn:
            project = await keys.project_for_key(conn, key)
        if project is None:
            raise Unauthenticated("the API key is not valid (unknown or revoked)")
        if self._ttl > 0:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = (project, time.monotonic() + self._ttl)
        return project


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
