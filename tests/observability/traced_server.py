"""A test server in a process of its own whose spans go to the OpenTelemetry SDK's in-memory
exporter (a process of its own: a tracer provider, once installed, stays for the process).

    python -m tests.observability.traced_server DATABASE_URL REDIS_URL

prints `ready <grpc address> <http url> <project id> <api key>`, serves until its stdin closes,
then prints every finished span as one JSON line and exits.
"""

from __future__ import annotations

import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.plugins.server import ServerThread, server_settings


def as_json(span: ReadableSpan) -> str:
    context, parent = span.get_span_context(), span.parent
    assert context is not None
    return json.dumps(
        {
            "name": span.name,
            "kind": span.kind.name,
            "trace_id": format(context.trace_id, "032x"),
            "span_id": format(context.span_id, "016x"),
            "parent_id": format(parent.span_id, "016x") if parent else None,
            "attributes": {k: str(v) for k, v in (span.attributes or {}).items()},
            "status": span.status.status_code.name,
        }
    )


def main() -> None:
    database_url, redis_url = sys.argv[1:3]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    server = ServerThread(server_settings(database_url, redis_url))
    project, key = server.new_key()
    print(f"ready {server.address} {server.http} {project} {key}", flush=True)
    sys.stdin.read()
    server.close()
    for span in exporter.get_finished_spans():
        print(as_json(span))


if __name__ == "__main__":
    main()
