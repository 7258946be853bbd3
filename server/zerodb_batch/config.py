"""Settings: the only module that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

# Where `serve` takes HTTP/JSON calls unless told otherwise. A Settings built in code (tests,
# benchmarks) has HTTP off, so that nothing binds this shared port by accident.
DEFAULT_HTTP_LISTEN = "127.0.0.1:8080"
HTTP_OFF = "off"


@dataclass(frozen=True)
class Settings:
    """Everything the server can be told, with its defaults. See README's configuration table."""

    database_url: str | None = None  # None: start the embedded PostgreSQL under data_dir
    redis_url: str | None = None  # None: start the embedded Valkey under data_dir
    data_dir: Path = Path(".zerodb")
    listen: str = "127.0.0.1:50051"
    http_listen: str = HTTP_OFF  # HOST:PORT of the HTTP/JSON door, or `off`
    pool_min: int = 2
    pool_max: int = 10
    pool_timeout: float = 10.0  # seconds a call waits for a connection before UNAVAILABLE
    auth_cache_seconds: float = 5.0  # how long a key lookup is trusted (revocation delay)
    idempotency_ttl_hours: int = 24
    max_message_bytes: int = 64 * 1024 * 1024
    drain_seconds: float = 10.0
    log_level: str = "INFO"
    event_stream_maxlen: int = 100_000  # entries kept per project stream (approximately)
    event_relay_poll_seconds: float = 1.0  # how often the relay looks for events left behind
    max_subscriptions: int = 1000  # open SubscribeEvents calls per server; more: RESOURCE_EXHAUSTED
    event_relay_redis_connections: int = 16  # the publishers' and relay's own Redis connections
    query_concurrency: int = 4  # reads of one parallel BatchQuery at a time (1 to pool_max - 1)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        d = cls()
        return cls(
            database_url=e.get("ZERODB_DATABASE_URL") or None,
            redis_url=e.get("ZERODB_REDIS_URL") or None,
            data_dir=Path(e.get("ZERODB_DATA_DIR", str(d.data_dir))),
            listen=e.get("ZERODB_LISTEN", d.listen),
            http_listen=e.get("ZERODB_HTTP_LISTEN", DEFAULT_HTTP_LISTEN).strip() or HTTP_OFF,
            pool_min=int(e.get("ZERODB_DB_POOL_MIN", d.pool_min)),
            pool_max=int(e.get("ZERODB_DB_POOL_MAX", d.pool_max)),
            pool_timeout=float(e.get("ZERODB_DB_TIMEOUT_SECONDS", d.pool_timeout)),
            auth_cache_seconds=float(e.get("ZERODB_AUTH_CACHE_SECONDS", d.auth_cache_seconds)),
            idempotency_ttl_hours=int(
                e.get("ZERODB_IDEMPOTENCY_TTL_HOURS", d.idempotency_ttl_hours)
            ),
            max_message_bytes=int(e.get("ZERODB_MAX_MESSAGE_BYTES", d.max_message_bytes)),
            drain_seconds=float(e.get("ZERODB_DRAIN_SECONDS", d.drain_seconds)),
            log_level=e.get("ZERODB_LOG_LEVEL", d.log_level).upper(),
            event_stream_maxlen=int(e.get("ZERODB_EVENT_STREAM_MAXLEN", d.event_stream_maxlen)),
            event_relay_poll_seconds=float(
                e.get("ZERODB_EVENT_RELAY_POLL_SECONDS", d.event_relay_poll_seconds)
            ),
            max_subscriptions=int(e.get("ZERODB_MAX_SUBSCRIPTIONS", d.max_subscriptions)),
            event_relay_redis_connections=int(
                e.get("ZERODB_EVENT_RELAY_REDIS_CONNECTIONS", d.event_relay_redis_connections)
            ),
            query_concurrency=int(e.get("ZERODB_QUERY_CONCURRENCY", d.query_concurrency)),
        )

    @property
    def http_enabled(self) -> bool:
        return self.http_listen.lower() != HTTP_OFF

    def with_http(self, listen: str) -> Settings:
        """These settings with the HTTP/JSON door at `listen` (`off` turns it off)."""
        return replace(self, http_listen=listen.strip() or HTTP_OFF)

    def with_backends(self, database_url: str, redis_url: str) -> Settings:
        """These settings pointed at concrete servers (the embedded ones, once started)."""
        return replace(self, database_url=database_url, redis_url=redis_url)


@dataclass(frozen=True)
class ClientSettings:
    """What the client commands (`zerodb-batch load`) take from the environment."""

    api_key: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientSettings:
        e = os.environ if env is None else env
        return cls(api_key=e.get("ZERODB_API_KEY") or None)
