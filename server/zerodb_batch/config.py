"""Settings: the only module that reads the environment, and checks every value it reads."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import TypeVar

from zerodb_batch.tls import TlsFileError, TlsFiles, is_loopback

N = TypeVar("N", int, float)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("TEXT", "JSON")
_SWITCH = {"on": True, "true": True, "1": True, "yes": True,
           "off": False, "false": False, "0": False, "no": False}  # fmt: skip
# Where OpenTelemetry's SDK finds span exporters by the names OTEL_TRACES_EXPORTER takes.
TRACE_EXPORTERS = "opentelemetry_traces_exporter"
_OTLP_PROTOCOLS = ("GRPC", "HTTP/PROTOBUF")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_MAX_INT32 = 2**31 - 1  # gRPC's message length limits are C ints
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(?P<port>[0-9]{1,5})")


TLS_CERT, TLS_KEY, TLS_CLIENT_CA = "ZERODB_TLS_CERT", "ZERODB_TLS_KEY", "ZERODB_TLS_CLIENT_CA"
ALLOW_PLAINTEXT = "ZERODB_ALLOW_PLAINTEXT"


class SettingError(ValueError):
    """A setting whose value the server cannot take; the message is one line for a human."""

    def __init__(self, name: str, value: str, expected: str) -> None:
        super().__init__(f"{name}={value!r} is invalid: expected {expected}")
        self.name = name


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
    health_probe_seconds: float = 1.0  # how often PostgreSQL and Redis are probed for health
    query_concurrency: int = 4  # reads of one parallel BatchQuery at a time (1 to pool_max - 1)
    max_concurrent_calls: int = 200  # calls a server runs at once; more: RESOURCE_EXHAUSTED
    project_calls_per_second: int = 0  # per project, across servers (in Redis); 0: no limit
    vector_index_threshold: int = 10_000  # vectors in a namespace before it gets an HNSW index
    vector_index_poll_seconds: float = 10.0  # how often the index builder looks for work
    vector_ef_search: int = 100  # HNSW candidates a search keeps (recall against speed)
    tls: TlsFiles | None = None  # None: plaintext (loopback only, unless allow_plaintext)
    allow_plaintext: bool = False  # plaintext on a non-loopback address, knowingly
    workers: int = 1  # server processes sharing the gRPC port (`serve --workers`)
    # Set by `serve --workers` for its workers only: bind the gRPC port with SO_REUSEPORT.
    reuse_port: bool = False
    observability: Observability = field(default_factory=lambda: Observability())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings in `env` (default: os.environ); raises SettingError on a bad value."""
        r, d = _Reader(os.environ if env is None else env), cls()
        settings = cls(
            database_url=r.text("ZERODB_DATABASE_URL"),
            redis_url=r.redis_url("ZERODB_REDIS_URL"),
            data_dir=Path(r.text("ZERODB_DATA_DIR") or d.data_dir),
            listen=r.listen("ZERODB_LISTEN", d.listen),
            http_listen=r.http_listen("ZERODB_HTTP_LISTEN"),
            pool_min=r.integer("ZERODB_DB_POOL_MIN", d.pool_min, 0, 1000),
            pool_max=r.integer("ZERODB_DB_POOL_MAX", d.pool_max, 2, 1000),
            pool_timeout=r.number("ZERODB_DB_TIMEOUT_SECONDS", d.pool_timeout, 0.1, 3600),
            auth_cache_seconds=r.number("ZERODB_AUTH_CACHE_SECONDS", d.auth_cache_seconds, 0, 3600),
            idempotency_ttl_hours=r.integer(
                "ZERODB_IDEMPOTENCY_TTL_HOURS", d.idempotency_ttl_hours, 1, 24 * 366
            ),
            max_message_bytes=r.integer(
                "ZERODB_MAX_MESSAGE_BYTES", d.max_message_bytes, 1024 * 1024, _MAX_INT32
            ),
            drain_seconds=r.number("ZERODB_DRAIN_SECONDS", d.drain_seconds, 0, 3600),
            log_level=r.choice("ZERODB_LOG_LEVEL", d.log_level, LOG_LEVELS),
            event_stream_maxlen=r.integer(
                "ZERODB_EVENT_STREAM_MAXLEN", d.event_stream_maxlen, 1, 1_000_000_000
            ),
            event_relay_poll_seconds=r.number(
                "ZERODB_EVENT_RELAY_POLL_SECONDS", d.event_relay_poll_seconds, 0.01, 3600
            ),
            max_subscriptions=r.integer(
                "ZERODB_MAX_SUBSCRIPTIONS", d.max_subscriptions, 0, 100_000
            ),
            event_relay_redis_connections=r.integer(
                "ZERODB_EVENT_RELAY_REDIS_CONNECTIONS", d.event_relay_redis_connections, 1, 1000
            ),
            health_probe_seconds=r.number(
                "ZERODB_HEALTH_PROBE_SECONDS", d.health_probe_seconds, 0.1, 60
            ),
            query_concurrency=r.integer("ZERODB_QUERY_CONCURRENCY", 0, 1, 999),
            max_concurrent_calls=r.integer(
                "ZERODB_MAX_CONCURRENT_CALLS", d.max_concurrent_calls, 1, 100_000
            ),
            project_calls_per_second=r.integer(
                "ZERODB_PROJECT_CALLS_PER_SECOND", d.project_calls_per_second, 0, 10_000_000
            ),
            vector_index_threshold=r.integer(
                "ZERODB_VECTOR_INDEX_THRESHOLD", d.vector_index_threshold, 1, 1_000_000_000
            ),
            vector_index_poll_seconds=r.number(
                "ZERODB_VECTOR_INDEX_POLL_SECONDS", d.vector_index_poll_seconds, 0.1, 3600
            ),
            vector_ef_search=r.integer("ZERODB_VECTOR_EF_SEARCH", d.vector_ef_search, 1, 1000),
            tls=r.tls(),
            allow_plaintext=r.switch(ALLOW_PLAINTEXT, d.allow_plaintext),
            workers=r.integer("ZERODB_WORKERS", d.workers, 1, 256),
            observability=Observability.read(r),
        )
        settings.refuse_open_plaintext()
        if settings.pool_max < settings.pool_min:
            raise SettingError(
                "ZERODB_DB_POOL_MAX",
                str(settings.pool_max),
                f"at least ZERODB_DB_POOL_MIN ({settings.pool_min})",
            )
        if not settings.query_concurrency:  # unset: the default, within what the pool allows
            settings = replace(
                settings, query_concurrency=min(d.query_concurrency, settings.pool_max - 1)
            )
        if settings.query_concurrency >= settings.pool_max:
            # A parallel batch holds one connection more than it reads on (its snapshot's).
            raise SettingError(
                "ZERODB_QUERY_CONCURRENCY",
                str(settings.query_concurrency),
                f"1 to ZERODB_DB_POOL_MAX - 1 ({settings.pool_max - 1})",
            )
        return settings

    @property
    def http_enabled(self) -> bool:
        return self.http_listen.lower() != HTTP_OFF

    def with_http(self, listen: str) -> Settings:
        """These settings with the HTTP/JSON door at `listen` (`off` turns it off)."""
        settings = replace(self, http_listen=listen.strip() or HTTP_OFF)
        settings.refuse_open_plaintext("--http")
        return settings

    def refuse_open_plaintext(self, http_name: str = "ZERODB_HTTP_LISTEN") -> None:
        """Without TLS, serve only on loopback addresses unless plaintext on a network is
        allowed in so many words: keys and data would cross the network in the clear."""
        if self.tls is not None or self.allow_plaintext:
            return
        listens = [("ZERODB_LISTEN", self.listen)]
        if self.http_enabled:
            listens.append((http_name, self.http_listen))
        for name, listen in listens:
            if not is_loopback(listen.rpartition(":")[0]):
                raise SettingError(
                    name, listen, f"a loopback address (127.0.0.1, ::1, localhost) when serving "
                    f"plaintext: set {TLS_CERT} and {TLS_KEY}, or {ALLOW_PLAINTEXT}=on",
                )  # fmt: skip

    def with_backends(self, database_url: str, redis_url: str) -> Settings:
        """These settings pointed at concrete servers (the embedded ones, once started)."""
        return replace(self, database_url=database_url, redis_url=redis_url)


@dataclass(frozen=True)
class Observability:
    """Metrics, traces and the log format (README, "Operating it")."""

    log_format: str = "TEXT"  # TEXT: one plain line per record; JSON: one object per line
    metrics: bool = True  # off: nothing is counted and /metrics answers 404
    metrics_listen: str = HTTP_OFF  # HOST:PORT of a listener serving only /metrics, or `off`
    # A `project` label on the per-RPC counters: one series per project, method and code.
    metrics_project_label: bool = False
    metrics_sample_seconds: float = 5.0  # how often pool, Redis, health and relay lag are read
    # Set: prometheus_client's multiprocess mode (several worker processes, one scrape).
    multiprocess_dir: Path | None = None
    # Span exporters by name (OTEL_TRACES_EXPORTER); empty: no traces (the default).
    trace_exporters: tuple[str, ...] = ()

    @classmethod
    def read(cls, r: _Reader) -> Observability:
        d = cls()
        return cls(
            log_format=r.choice("ZERODB_LOG_FORMAT", d.log_format, LOG_FORMATS),
            metrics=r.switch("ZERODB_METRICS", d.metrics),
            metrics_listen=r.optional_listen("ZERODB_METRICS_LISTEN"),
            metrics_project_label=r.switch("ZERODB_METRICS_PROJECT_LABEL", d.metrics_project_label),
            metrics_sample_seconds=r.number(
                "ZERODB_METRICS_SAMPLE_SECONDS", d.metrics_sample_seconds, 0.1, 3600
            ),
            multiprocess_dir=r.directory("PROMETHEUS_MULTIPROC_DIR"),
            trace_exporters=r.trace_exporters("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"),
        )

    @property
    def metrics_served_apart(self) -> bool:
        return self.metrics and self.metrics_listen.lower() != HTTP_OFF


class _Reader:
    """Reads one kind of value per method; an unset or empty variable gives the default."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str) -> str | None:
        return self._env.get(name) or None

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        return self._ranged(name, default, int, low, high, f"an integer from {low} to {high}")

    def number(self, name: str, default: float, low: float, high: float) -> float:
        expected = f"a number of seconds from {low:g} to {high:g}"
        return self._ranged(name, default, float, low, high, expected)

    def _ranged(
        self, name: str, default: N, parse: Callable[[str], N], low: N, high: N, expected: str
    ) -> N:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = parse(raw)
        except ValueError:
            raise SettingError(name, raw, expected) from None
        if not low <= value <= high:  # NaN is in no range
            raise SettingError(name, raw, expected)
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        if raw.upper() not in choices:
            raise SettingError(name, raw, f"one of {', '.join(choices)}")
        return raw.upper()

    def listen(self, name: str, default: str) -> str:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        found = _HOST_PORT.fullmatch(raw)
        if found is None or int(found["port"]) > 65535:
            raise SettingError(name, raw, "host:port with a port from 0 to 65535")
        return raw

    def http_listen(self, name: str) -> str:
        """Unset: the door's default address; empty or `off`: no door; else host:port."""
        raw = self._env.get(name)
        if raw is None:
            return DEFAULT_HTTP_LISTEN
        return self.optional_listen(name)

    def optional_listen(self, name: str) -> str:
        """Unset, empty or `off`: off; else host:port."""
        if self._env.get(name, "").strip().lower() in ("", HTTP_OFF):
            return HTTP_OFF
        return self.listen(name, HTTP_OFF)

    def switch(self, name: str, default: bool) -> bool:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        if raw.lower() not in _SWITCH:
            raise SettingError(name, raw, "on or off")
        return _SWITCH[raw.lower()]

    def directory(self, name: str) -> Path | None:
        """An existing directory this process may write in, or None when unset."""
        raw = self._env.get(name, "").strip()
        if not raw:
            return None
        if not (os.path.isdir(raw) and os.access(raw, os.W_OK | os.X_OK)):
            raise SettingError(name, raw, "an existing directory the server may write in")
        return Path(raw)

    def trace_exporters(self, name: str, disabled: str) -> tuple[str, ...]:
        """OpenTelemetry's exporter list (`otlp`, `console`, ...; `none` or unset: none), each
        an installed exporter's entry point; the SDK's own OTEL_SDK_DISABLED=true turns it off.
        `otlp` is the exporter of the OTLP protocol the standard variables name (grpc unless
        told otherwise), as the SDK's own configuration resolves it."""
        if self.switch(disabled, False):
            return ()
        raw = self._env.get(name, "").strip()
        names = tuple(self._otlp(n) if n == "otlp" else n for n in _names(raw) if n != "none")
        known = {e.name for e in entry_points(group=TRACE_EXPORTERS)}
        if unknown := [n for n in names if n not in known]:
            raise SettingError(
                name, raw, f"none, otlp or installed exporters ({', '.join(sorted(known))}); "
                f"{', '.join(unknown)} is not installed",
            )  # fmt: skip
        return names

    def _otlp(self, name: str) -> str:
        """The exporter of the OTLP protocol the standard variables name (grpc by default)."""
        protocol = self.choice(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            self.choice("OTEL_EXPORTER_OTLP_PROTOCOL", "GRPC", _OTLP_PROTOCOLS),
            _OTLP_PROTOCOLS,
        )
        return f"{name}_proto_{protocol.partition('/')[0].lower()}"

    def tls(self) -> TlsFiles | None:
        """The TLS files, all checked now (readable, a certificate matching its key); the
        certificate and the key go together, and a client CA needs both."""
        cert, key, ca = (self.text(n) for n in (TLS_CERT, TLS_KEY, TLS_CLIENT_CA))
        if not (cert or key):
            if ca:
                raise SettingError(TLS_CLIENT_CA, ca, f"unset unless {TLS_CERT} and {TLS_KEY} "
                                   "are set (mutual TLS is TLS first)")  # fmt: skip
            return None
        if not (cert and key):
            given, missing = (TLS_CERT, TLS_KEY) if cert else (TLS_KEY, TLS_CERT)
            raise SettingError(missing, "", f"a PEM file, since {given} is set (the "
                               "certificate and its key go together)")  # fmt: skip
        files = TlsFiles(Path(cert), Path(key), Path(ca) if ca else None)
        try:
            files.server_context()
        except TlsFileError as e:
            name, value = (TLS_CLIENT_CA, ca or "") if e.client_ca else (TLS_CERT, cert)
            raise SettingError(name, value, str(e)) from None
        return files

    def redis_url(self, name: str) -> str | None:
        raw = self._env.get(name, "").strip()
        if raw and not raw.startswith(REDIS_SCHEMES):
            raise SettingError(name, raw, f"a URL starting with {', '.join(REDIS_SCHEMES)}")
        return raw or None


@dataclass(frozen=True)
class ClientSettings:
    """What the client commands (`zerodb-batch load`) take from the environment."""

    api_key: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientSettings:
        e = os.environ if env is None else env
        return cls(api_key=e.get("ZERODB_API_KEY") or None)


def _names(raw: str) -> list[str]:
    return [n.strip() for n in raw.split(",") if n.strip()]
