"""Fixtures for the backing servers: embedded PostgreSQL + Valkey, or external ones from the env.

Set ZERODB_TEST_DATABASE_URL / ZERODB_TEST_REDIS_URL to test against external servers. Either way
the session works in a database of its own (created here, dropped at the end).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from zerodb_batch.embedded import EmbeddedPostgres, EmbeddedValkey


@dataclass(frozen=True)
class Backends:
    admin_url: str  # a database on the server where test databases can be created
    redis_url: str


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A data dir for embedded servers, outside pytest's tmp tree: every pytest start resets
    /tmp/pytest-of-<user> to 0700, which locks the PostgreSQL system user out of a running
    server's files when two sessions overlap."""
    path = Path(tempfile.mkdtemp(prefix="zdb-test-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with scratch_dir() as path:
        yield path / "data"


@pytest.fixture(scope="session")
def backends() -> Iterator[Backends]:
    with scratch_dir() as data_dir:
        yield from _backends(data_dir)


def _backends(data_dir: Path) -> Iterator[Backends]:
    db_url = os.environ.get("ZERODB_TEST_DATABASE_URL")
    redis_url = os.environ.get("ZERODB_TEST_REDIS_URL")
    postgres = None if db_url else EmbeddedPostgres(data_dir)
    valkey = None if redis_url else EmbeddedValkey(data_dir)
    try:
        db_url = db_url or postgres.start()  # type: ignore[union-attr]
        redis_url = redis_url or valkey.start()  # type: ignore[union-attr]
        yield Backends(db_url, redis_url)
    finally:
        if valkey:
            valkey.stop()
        if postgres:
            postgres.stop()


def create_database(admin_url: str, prefix: str = "zerodb_test") -> str:
    """A new empty database on the admin URL's server; returns its conninfo."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(admin_url, dbname=name)


def drop_database(admin_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def database_url(backends: Backends) -> Iterator[str]:
    url = create_database(backends.admin_url)
    yield url
    drop_database(backends.admin_url, url)


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain connection for checking what the server wrote."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn
