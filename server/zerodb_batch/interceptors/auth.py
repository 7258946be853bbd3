"""API-key authentication: `x-api-key` (or `authorization: Bearer`) -> project, per request."""

from __future__ import annotations

import time
from collections.abc import Iterable

from psycopg_pool import AsyncConnectionPool

from zerodb_batch.errors import InvalidArgument, PermissionDenied, Unauthenticated, Violation
from zerodb_batch.storage import keys
from zerodb_batch.storage.pool import Conn, connection

_CACHE_MAX = 10_000


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

    def __init__(self, pool: AsyncConnectionPool[Conn], cache_seconds: float) -> None:
        self._pool = pool
        self._ttl = cache_seconds
        self._cache: dict[bytes, tuple[str, float]] = {}

    async def project_of(self, key: str) -> str:
        digest = keys.hash_key(key)
        hit = self._cache.get(digest)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        async with connection(self._pool) as conn:
            project = await keys.project_for_key(conn, key)
        if project is None:
            raise Unauthenticated("the API key is not valid (unknown or revoked)")
        if self._ttl > 0:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = (project, time.monotonic() + self._ttl)
        return project


def check_project(key_project: str, request: object) -> None:
    """The request must name the key's project."""
    requested = getattr(request, "project_id", None)
    if requested is None:
        return
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
