"""A data dir locked to one `serve`, with its embedded Postgres and Valkey started under it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from zerodb_batch.embedded.errors import EmbeddedBusy
from zerodb_batch.embedded.postgres import EmbeddedPostgres
from zerodb_batch.embedded.valkey import EmbeddedValkey


class Embedded:
    """Both servers for `zerodb-batch serve`, with the data dir locked against a second serve."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.absolute()
        self.lock_path = self.data_dir / "serve.lock"
        self.postgres = EmbeddedPostgres(self.data_dir)
        self.valkey = EmbeddedValkey(self.data_dir)
        self.database_url = ""
        self.redis_url = ""
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Embedded:
        with contextlib.ExitStack() as stack:
            stack.callback(os.close, self._lock())
            self.database_url = self.postgres.start()
            stack.callback(self.postgres.stop)
            self.redis_url = self.valkey.start()
            stack.callback(self.valkey.stop)
            self._stack = stack.pop_all()  # all started: keep them past this block
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()  # Valkey, then Postgres, then the lock

    def _lock(self) -> int:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # os.open fds are not inherited (PEP 446), so no child of ours can keep the lock held.
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EmbeddedBusy(
                f"data dir {self.data_dir} is in use by another serve "
                f"(pid {holder}, lock {self.lock_path})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd
