"""The server's log on stderr: plain lines (the default), or one JSON object per line.

A JSON line has `time` (UTC, ISO 8601), `level`, `logger` and `message`, plus the fields its
call site adds: the line of each RPC has `rpc`, `code`, `duration_ms`, `request_id`, `trace_id`,
`project_id` and, for our errors, `reason`. A line logged while an RPC runs (a PostgreSQL error,
say) carries that call's `rpc`, `request_id`, `trace_id` and `project_id` too.

What the log never holds: API keys (the interceptor logs the key's project, never the key) and
request or response payloads (logged lines name methods, codes and reasons, not contents).
"""

from __future__ import annotations

import logging

from pythonjsonlogger.orjson import OrjsonFormatter

from zerodb_batch.observability.calls import current

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# With several worker processes on one stderr, each line says which process wrote it.
WORKER_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [pid %(process)d]: %(message)s"
_CALL_FIELDS = ("rpc", "request_id", "trace_id", "project_id")


def configure(level: str, log_format: str, *, worker: bool = False) -> None:
    """Send every record at `level` or above to stderr in `log_format` (TEXT or JSON), unless
    the process has set up logging already (as a test runner has; basicConfig's rule). A
    `worker` of `serve --workers` adds its pid to every line (`pid` in JSON)."""
    handler = logging.StreamHandler()
    if log_format == "JSON":
        handler.setFormatter(json_formatter(worker=worker))
        handler.addFilter(CallFields())
    else:
        handler.setFormatter(logging.Formatter(WORKER_TEXT_FORMAT if worker else TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


def json_formatter(*, worker: bool = False) -> logging.Formatter:
    return OrjsonFormatter(
        ["levelname", "name", "message", *(["process"] if worker else [])],
        rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
        timestamp="time",
    )


class CallFields(logging.Filter):
    """Adds the running RPC's fields to a record that does not have them already."""

    def filter(self, record: logging.LogRecord) -> bool:
        call = current()
        if call is None or hasattr(record, "rpc"):
            return True
        values = (call.site.method, call.request_id, call.trace_id, call.project)
        for name, value in zip(_CALL_FIELDS, values, strict=True):
            setattr(record, name, value)
        return True
