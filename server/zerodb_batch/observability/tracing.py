"""OpenTelemetry traces: off unless OTEL_TRACES_EXPORTER names exporters, or unless the process
already runs an SDK tracer provider (as under `opentelemetry-instrument`).

When on, every RPC is a server span that continues the caller's `traceparent` (gRPC metadata; the
HTTP door forwards the header), with SQL statements (psycopg's instrumentation), Redis commands
(redis-py's) and our own spans (each chunk of a streamed load, each XADD pipeline) as children.
Everything else the SDK takes from the standard variables: OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_*
(endpoint, headers, ...), OTEL_TRACES_SAMPLER, OTEL_BSP_*, OTEL_PROPAGATORS.

Library spans are kept only inside a trace: the relay's polls and the health probes run SQL every
second, and each would otherwise start a trace of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, TypeAlias

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, StatusCode, Tracer, TracerProvider

from zerodb_batch.config import TRACE_EXPORTERS

SCOPE = "zerodb_batch"
# gRPC codes that mean the server failed (OpenTelemetry's semantic conventions for RPC servers):
# UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
_SERVER_ERRORS = frozenset((2, 4, 12, 13, 14, 15))

Metadata: TypeAlias = Mapping[str, str | bytes]  # a call's, as grpc gives it (`-bin`: bytes)

_inside: Tracer | None = None  # process-wide, as OpenTelemetry's provider is: None while off


class Tracing:
    """This server's tracer: `tracer` is None while traces are off (then nothing is spent)."""

    def __init__(self, provider: SdkTracerProvider | None) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(SCOPE) if provider else None

    @classmethod
    def start(cls, exporters: Sequence[str]) -> Tracing:
        """Traces through `exporters` (entry point names, checked by config), or through the SDK
        provider already installed; off when there is neither."""
        global _inside
        installed = trace.get_tracer_provider()
        if isinstance(installed, SdkTracerProvider):
            provider = installed
        elif exporters:
            provider = SdkTracerProvider(resource=_resource())
            trace.set_tracer_provider(provider)
        else:
            return cls(None)
        for name in exporters:
            provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
        _inside = InsideTraces(provider).get_tracer(SCOPE)
        return cls(provider)

    @property
    def inside_traces(self) -> TracerProvider | None:
        """The provider to hand to library instrumentations: spans only within a trace."""
        return InsideTraces(self.provider) if self.provider else None

    def server_span(self, name: str, metadata: Metadata) -> tuple[Span, object]:
        """A server span continuing the caller's context, made current; and the token that
        `end` needs to restore the context."""
        assert self.tracer is not None
        parent = propagate.extract(metadata)
        span = self.tracer.start_span(name, parent, SpanKind.SERVER)
        return span, otel_context.attach(trace.set_span_in_context(span, parent))

    @staticmethod
    def end(span: Span, token: object, code: int, code_name: str) -> None:
        span.set_attribute("rpc.grpc.status_code", code)
        if code in _SERVER_ERRORS:
            span.set_status(StatusCode.ERROR, code_name)
        span.end()
        with contextlib.suppress(ValueError):  # a generator closed in another context
            otel_context.detach(token)  # type: ignore[arg-type]  # attach's own token

    def flush(self) -> None:
        if self.provider is not None:
            self.provider.force_flush(timeout_millis=5000)


def _resource() -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, with our name where they give none."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "zerodb-batch"}))
    return resource


def _exporter(name: str) -> SpanExporter:
    (found,) = entry_points(group=TRACE_EXPORTERS, name=name)
    exporter: SpanExporter = found.load()()
    return exporter


def trace_id_of(metadata: Metadata) -> str | None:
    """The trace id a caller's `traceparent` names (for the log line while traces are off)."""
    if "traceparent" not in metadata:
        return None
    found = trace.get_current_span(propagate.extract(metadata)).get_span_context()
    return format(found.trace_id, "032x") if found.is_valid else None


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, if any."""
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return format(found.trace_id, "032x"), format(found.span_id, "016x")


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[object]:
    """A child span of the current one while traces are on; nothing otherwise."""
    if _inside is None:
        return contextlib.nullcontext()
    return _inside.start_as_current_span(name, attributes=attributes)


def _in_a_trace(context: otel_context.Context | None) -> bool:
    return trace.get_current_span(context).get_span_context().is_valid


class InsideTraces(TracerProvider):
    """A provider whose tracers start spans only under a current span."""

    def __init__(self, real: TracerProvider) -> None:
        self._real = real

    def get_tracer(self, *args: Any, **kwargs: Any) -> Tracer:
        return _InsideTracer(self._real.get_tracer(*args, **kwargs))


class _InsideTracer(Tracer):
    def __init__(self, real: Tracer) -> None:
        self._real = real

    def start_span(
        self, name: str, context: otel_context.Context | None = None, *args: Any, **kwargs: Any
    ) -> Span:
        if not _in_a_trace(context):
            return INVALID_SPAN
        return self._real.start_span(name, context, *args, **kwargs)

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]
        self, name: str, context: otel_context.Context | None = None, *args: Any, **kwargs: Any
    ) -> Iterator[Span]:
        if not _in_a_trace(context):
            yield INVALID_SPAN
            return
        with self._real.start_as_current_span(name, context, *args, **kwargs) as started:
            yield started
