"""One RPC as an operator sees it: its metrics, its span and the fields of its log line.

The interceptor starts a `Call` for each RPC and finishes it with the status. While the handler
runs, `current()` is that call, so the code below the border (the per-item results of a batch,
the streamed-load engine) adds to it without being handed anything: counts it already made, never
a loop over the items.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from contextvars import ContextVar, Token

from opentelemetry.trace import Span

from zerodb_batch.observability import tracing
from zerodb_batch.observability.metrics import Load, Metrics, Rpc
from zerodb_batch.observability.tracing import Metadata, Tracing

_CURRENT: ContextVar[Call | None] = ContextVar("zerodb_batch_call", default=None)


class Observer:
    """A server's metrics (None when off) and tracing; `site(method)` for each RPC method."""

    def __init__(self, metrics: Metrics | None, tracing: Tracing) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self._sites: dict[str, Site] = {}

    def site(self, method: str) -> Site:
        found = self._sites.get(method)
        if found is None:
            found = self._sites[method] = Site(self, method)
        return found


class Site:
    """One RPC method: its bound metrics, made once and shared by its calls."""

    __slots__ = ("method", "metrics", "rpc", "tracing")

    def __init__(self, observer: Observer, method: str) -> None:
        self.method = method
        self.metrics = observer.metrics
        self.rpc: Rpc | None = observer.metrics.rpc(method) if observer.metrics else None
        self.tracing = observer.tracing

    def received(self, size: int) -> None:
        """A request message of `size` bytes arrived."""
        if self.rpc is not None:
            self.rpc.request_bytes.observe(size)

    def sent(self, size: int) -> None:
        if self.rpc is not None:
            self.rpc.response_bytes.observe(size)

    def start(self, metadata: Metadata, request_id: str) -> Call:
        return Call(self, metadata, request_id)


class Call:
    """One RPC from its start to its status; current (see `current()`) until `finish`."""

    __slots__ = (
        "_caller_trace", "_otel_token", "_span", "_start", "_token", "project", "request_id",
        "site",
    )  # fmt: skip

    def __init__(self, site: Site, metadata: Metadata, request_id: str) -> None:
        self.site = site
        self.request_id = request_id
        self.project: str | None = None  # the API key's, once authenticated
        self._span: Span | None = None
        self._otel_token: object = None  # restores OpenTelemetry's context at the end
        self._caller_trace: str | None = None  # the caller's trace id while traces are off
        if site.tracing.tracer is not None:
            self._span, self._otel_token = site.tracing.server_span(
                site.method.lstrip("/"), metadata
            )
        else:
            self._caller_trace = tracing.trace_id_of(metadata)
        if site.rpc is not None:
            site.rpc.in_flight.inc()
        self._token: Token[Call | None] = _CURRENT.set(self)
        self._start = time.perf_counter()

    def finish(self, code: int, code_name: str, reason: str | None) -> dict[str, object]:
        """Count the call and end its span; returns the fields of its log line."""
        seconds = time.perf_counter() - self._start
        rpc = self.site.rpc
        if rpc is not None:
            rpc.in_flight.dec()
            rpc.finished(code_name, seconds, self.project)
        fields: dict[str, object] = {
            "rpc": self.site.method, "code": code_name, "duration_ms": round(seconds * 1000, 1),
            "request_id": self.request_id, "project_id": self.project, "reason": reason,
            "trace_id": self.trace_id,
        }  # fmt: skip
        if self._span is not None:
            self.site.tracing.end(self._span, self._otel_token, code, code_name)
        with contextlib.suppress(ValueError):  # finished in another context (a generator
            _CURRENT.reset(self._token)  # closed elsewhere): that context goes with it
        return fields

    @property
    def trace_id(self) -> str | None:
        if self._span is not None:
            return format(self._span.get_span_context().trace_id, "032x")
        return self._caller_trace

    def items(self, total: int, outcomes: Mapping[str, int]) -> None:
        if self.site.rpc is not None:
            self.site.rpc.items(total, outcomes, self.project)


def current() -> Call | None:
    """The RPC being handled in this context, if any."""
    return _CURRENT.get()


def record_items(total: int, outcomes: Mapping[str, int]) -> None:
    """A write batch of the current call: `total` items, counted by outcome name."""
    call = _CURRENT.get()
    if call is not None:
        call.items(total, outcomes)


def load_metrics(kind: str) -> Load | None:
    """The current call's metrics of streamed loads of `kind` (None while metrics are off)."""
    call = _CURRENT.get()
    metrics = call.site.metrics if call is not None else None
    return metrics.load(kind) if metrics is not None else None


def current_metrics() -> Metrics | None:
    call = _CURRENT.get()
    return call.site.metrics if call is not None else None
