"""`serve --workers N`: N server processes on one gRPC port, each with its own pools.

As grpc's multiprocessing example does, the parent holds the port with a socket of its own that
has SO_REUSEPORT and never listens (so it takes no connection), and every worker binds the same
port with `grpc.so_reuseport`; the kernel spreads new connections over the workers. Before that,
the parent binds the address plainly: a port that another program holds is a start-up error, as
with one process, not silent sharing.

The parent migrates and makes the first-start key once, empties PROMETHEUS_MULTIPROC_DIR (the
whole service is starting), then spawns the workers (fresh interpreters: nothing inherited, no
gRPC state across a fork) and prints the banner once all of them serve. A worker that dies is
started again, after `mark_process_dead` so that its live gauges do not linger in the sums.
SIGINT or SIGTERM stops every worker, each draining its calls. The relay and the background tasks
run in every worker: they are made for replicas already (SKIP LOCKED claims, advisory locks).

The HTTP/JSON door and the metrics listener run in the first worker only (they bind their
ports plainly, so a held port still fails the start): HTTP calls are served by that worker's gRPC
server, and its /metrics adds up every worker's files in multiprocess mode.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue

from zerodb_batch import app as app_module
from zerodb_batch.config import HTTP_OFF, Settings
from zerodb_batch.errors import StartupError
from zerodb_batch.observability import logs
from zerodb_batch.observability.metrics import clear_process_files, process_dead
from zerodb_batch.storage.pool import single_connection

log = logging.getLogger("zerodb_batch")

START_SECONDS = 120.0  # how long a worker may take to serve (its pools, migrations checked)
WATCH_SECONDS = 0.5  # how often the parent looks for a worker that died

Ready = Queue  # of (pid, error or None): each worker says once whether it serves


def reserve(listen: str) -> tuple[socket.socket, str]:
    """Hold `listen`'s port for the workers: (the holding socket, HOST:PORT with the port
    chosen when `listen` asks for port 0). StartupError if another program holds it."""
    host, _, port = listen.rpartition(":")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), int(port), type=socket.SOCK_STREAM
        )[0]
        with socket.socket(family, kind, proto) as probe:  # plain: fails on any holder
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            probe.bind(address)
            chosen = probe.getsockname()[1]
        held = socket.socket(family, kind, proto)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind((*address[:1], chosen, *address[2:]))
    except (OSError, ValueError) as e:
        raise StartupError(f"cannot listen on {listen}: {e} (is the port in use?)") from e
    return held, f"{host}:{chosen}"


def serve(settings: Settings, every: Callable[[], None] = lambda: None) -> None:
    """Run `settings.workers` workers until SIGINT or SIGTERM (backends already running);
    `every` runs between the parent's looks at its workers (the embedded servers' check)."""
    held, listen = reserve(settings.listen)
    with held:
        bootstrap = asyncio.run(_prepare(settings))
        if settings.observability.multiprocess_dir is not None:
            clear_process_files(settings.observability.multiprocess_dir)
        else:
            log.warning("several workers without PROMETHEUS_MULTIPROC_DIR: /metrics shows one")
        Workers(replace(settings, listen=listen, reuse_port=True)).run(bootstrap, every)


async def _prepare(settings: Settings) -> tuple[str, str] | None:
    async with single_connection(settings.database_url or "") as conn:
        return await app_module.prepare_store(conn)


class Workers:
    """The worker processes of one `serve --workers`, started, watched and stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._ready: Ready[tuple[int, str | None]] = self._context.Queue()
        self._procs: list[SpawnProcess | None] = [None] * settings.workers

    def run(self, bootstrap: tuple[str, str] | None, every: Callable[[], None]) -> None:
        stop = _stop_on_signals()
        try:
            for index in range(len(self._procs)):
                self._start(index)
            print(f"zerodb-batch serving on {self.settings.listen}", flush=True)
            print(f"workers: {' '.join(str(p.pid) for p in self._procs if p)}", flush=True)
            if bootstrap:
                print("first start: created a project and a development API key (shown once)")
                print(f"project_id: {bootstrap[0]}")
                print(f"api_key: {bootstrap[1]}", flush=True)
            while not stop.wait(WATCH_SECONDS):
                every()
                self._restart_dead()
        finally:
            self._stop_all()

    def _start(self, index: int) -> None:
        """Start worker `index` and wait until it serves; StartupError if it cannot."""
        settings = self.settings if index == 0 else _without_listeners(self.settings)
        proc = self._context.Process(
            target=_worker, args=(settings, self._ready), name=f"zerodb-worker-{index}"
        )
        proc.start()
        self._procs[index] = proc
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                pid, error = self._ready.get(timeout=WATCH_SECONDS)
                break
            except queue.Empty:
                if not proc.is_alive() or time.monotonic() > deadline:
                    raise StartupError(f"worker {index} did not start ({proc.exitcode})") from None
        if error is not None:
            raise StartupError(error)
        assert pid == proc.pid, "workers start one at a time"

    def _restart_dead(self) -> None:
        for index, proc in enumerate(self._procs):
            if proc is not None and not proc.is_alive():
                log.warning("worker %s exited (%s); starting another", proc.pid, proc.exitcode)
                if self.settings.observability.multiprocess_dir is not None:
                    process_dead(self.settings.observability.multiprocess_dir, proc.pid or 0)
                self._start(index)
                log.warning("worker %s started in place of %s", self._pid(index), proc.pid)

    def _pid(self, index: int) -> int | None:
        proc = self._procs[index]
        return proc.pid if proc is not None else None

    def _stop_all(self) -> None:
        alive = [p for p in self._procs if p is not None and p.is_alive()]
        for proc in alive:
            os.kill(proc.pid or 0, signal.SIGTERM)
        for proc in alive:
            proc.join(self.settings.drain_seconds + 10)
            if proc.is_alive():
                proc.kill()


def _without_listeners(settings: Settings) -> Settings:
    """A worker other than the first: no HTTP door, no metrics listener (ports it cannot share)."""
    observability = replace(settings.observability, metrics_listen=HTTP_OFF)
    return replace(settings, http_listen=HTTP_OFF, observability=observability)


def _stop_on_signals() -> threading.Event:
    """An event that SIGINT or SIGTERM sets. A Python handler, not a blocked signal: the kernel
    may deliver a signal to any thread (gRPC's own, say), and only a handler makes it reach the
    main thread rather than end the parent by default, leaving its workers behind."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _worker(settings: Settings, ready: Ready[tuple[int, str | None]]) -> None:
    """One worker: serve until SIGINT or SIGTERM, then drain; say on `ready` whether it serves."""
    logs.configure(settings.log_level, settings.observability.log_format, worker=True)
    asyncio.run(_serve(settings, ready))


async def _serve(settings: Settings, ready: Ready[tuple[int, str | None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        running = await app_module.start(settings)
    except StartupError as e:
        ready.put((os.getpid(), str(e)))
        return
    except BaseException as e:
        ready.put((os.getpid(), f"worker failed to start: {e!r}"))
        raise
    ready.put((os.getpid(), None))
    await stop.wait()
    await running.stop()
