"""A malformed setting stops the real `zerodb-batch` command with one line and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zerodb_batch.config import SettingError, Settings

COMMAND = str(Path(sys.executable).parent / "zerodb-batch")

BAD = [
    ("ZERODB_MAX_MESSAGE_BYTES", "x", "an integer from 1048576 to 2147483647"),
    ("ZERODB_MAX_MESSAGE_BYTES", "100", "an integer from 1048576 to 2147483647"),
    ("ZERODB_LOG_LEVEL", "LOUD", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("ZERODB_DB_POOL_MIN", "-1", "an integer from 0 to 1000"),
    ("ZERODB_DB_POOL_MAX", "1", "an integer from 2 to 1000"),
    ("ZERODB_QUERY_CONCURRENCY", "0", "an integer from 1 to 999"),
    ("ZERODB_DB_TIMEOUT_SECONDS", "nan", "a number of seconds from 0.1 to 3600"),
    ("ZERODB_DB_TIMEOUT_SECONDS", "-5", "a number of seconds from 0.1 to 3600"),
    ("ZERODB_AUTH_CACHE_SECONDS", "inf", "a number of seconds from 0 to 3600"),
    ("ZERODB_IDEMPOTENCY_TTL_HOURS", "1.5", "an integer from 1 to 8784"),
    ("ZERODB_DRAIN_SECONDS", "soon", "a number of seconds from 0 to 3600"),
    ("ZERODB_EVENT_STREAM_MAXLEN", "0", "an integer from 1 to 1000000000"),
    ("ZERODB_EVENT_RELAY_POLL_SECONDS", "0", "a number of seconds from 0.01 to 3600"),
    ("ZERODB_MAX_SUBSCRIPTIONS", "-3", "an integer from 0 to 100000"),
    ("ZERODB_EVENT_RELAY_REDIS_CONNECTIONS", "0", "an integer from 1 to 1000"),
    ("ZERODB_HEALTH_PROBE_SECONDS", "0", "a number of seconds from 0.1 to 60"),
    ("ZERODB_LISTEN", "localhost", "host:port with a port from 0 to 65535"),
    ("ZERODB_LISTEN", "127.0.0.1:70000", "host:port with a port from 0 to 65535"),
    ("ZERODB_REDIS_URL", "localhost:6379", "a URL starting with redis://, rediss://, unix://"),
    ("ZERODB_LOG_FORMAT", "xml", "one of TEXT, JSON"),
    ("ZERODB_METRICS", "maybe", "on or off"),
    ("ZERODB_METRICS_PROJECT_LABEL", "2", "on or off"),
    ("ZERODB_METRICS_LISTEN", "9100", "host:port with a port from 0 to 65535"),
    ("ZERODB_METRICS_SAMPLE_SECONDS", "0", "a number of seconds from 0.1 to 3600"),
    ("PROMETHEUS_MULTIPROC_DIR", "/nonexistent", "an existing directory the server may write in"),
    ("ZERODB_MAX_CONCURRENT_CALLS", "0", "an integer from 1 to 100000"),
    ("ZERODB_PROJECT_CALLS_PER_SECOND", "-1", "an integer from 0 to 10000000"),
]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    ours = ("ZERODB_", "OTEL_", "PROMETHEUS_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    return subprocess.run(
        [COMMAND, *args], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(("name", "value", "expected"), BAD)
def test_a_bad_setting_is_one_line_and_exit_2(
    name: str, value: str, expected: str, tmp_path: Path
) -> None:
    done = run({name: value, "ZERODB_DATA_DIR": str(tmp_path)}, "serve")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"zerodb-batch: {name}={value!r} is invalid: expected {expected}\n"
    assert not (tmp_path / "pg").exists(), "nothing may start before the settings are checked"


def test_pool_max_below_pool_min_names_both(tmp_path: Path) -> None:
    done = run({"ZERODB_DB_POOL_MIN": "8", "ZERODB_DB_POOL_MAX": "4"}, "migrate")
    assert done.returncode == 2
    assert done.stderr == (
        "zerodb-batch: ZERODB_DB_POOL_MAX='4' is invalid: expected at least "
        "ZERODB_DB_POOL_MIN (8)\n"
    )


def test_every_command_checks_the_settings() -> None:
    done = run({"ZERODB_LOG_LEVEL": "chatty"}, "keys", "list", "--project", "p")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "ZERODB_LOG_LEVEL='chatty'" in done.stderr


def test_good_values_at_the_edges_are_taken() -> None:
    settings = Settings.from_env(
        {
            "ZERODB_LOG_LEVEL": "debug",
            "ZERODB_MAX_MESSAGE_BYTES": " 2147483647 ",
            "ZERODB_DB_POOL_MIN": "0",
            "ZERODB_DB_POOL_MAX": "2",
            "ZERODB_LISTEN": "[::1]:0",
            "ZERODB_REDIS_URL": "unix:///tmp/v.sock",
            "ZERODB_DRAIN_SECONDS": "",  # empty: the default
        }
    )
    assert (settings.log_level, settings.max_message_bytes) == ("DEBUG", 2**31 - 1)
    assert (settings.pool_min, settings.pool_max, settings.listen) == (0, 2, "[::1]:0")
    assert settings.query_concurrency == 1  # the default, lowered to what the pool allows
    assert settings.drain_seconds == Settings().drain_seconds


def test_the_error_names_the_variable() -> None:
    with pytest.raises(SettingError) as caught:
        Settings.from_env({"ZERODB_IDEMPOTENCY_TTL_HOURS": "0"})
    assert caught.value.name == "ZERODB_IDEMPOTENCY_TTL_HOURS"


def test_trace_exporters_are_checked_against_those_installed() -> None:
    assert Settings.from_env({}).observability.trace_exporters == ()
    on = Settings.from_env({"OTEL_TRACES_EXPORTER": "otlp,console"}).observability
    assert on.trace_exporters == ("otlp_proto_grpc", "console")
    off = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}
    assert Settings.from_env(off).observability.trace_exporters == ()
    for env, wrong in (
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "jaeger is not installed"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "pigeon"}, "GRPC"),
    ):
        done = run(env, "serve")
        assert done.returncode == 2 and done.stderr.count("\n") == 1
        assert wrong in done.stderr, done.stderr
