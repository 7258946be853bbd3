"""`zerodb-batch serve` as a real subprocess, stopped during a burst of batch upserts.

SIGTERM: the calls in flight finish within the grace period, new ones are refused with
UNAVAILABLE, the process exits 0, and nothing is half-written (each batch is all there or not at
all). SIGKILL: the next `serve` on the same data dir adopts what the killed one left running and
serves; every acknowledged batch is there, none is half-written."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil

from tests.plugins.checks import wait_for
from tests.plugins.serve import Serve, free_port, serve_env
from zerodb.v1 import memory_pb2
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub

CLIENTS, RECORDS = 6, 20
DRAIN = "10"  # ZERODB_DRAIN_SECONDS: the grace period for calls in flight


@dataclass
class Outcome:
    client: int
    call: int
    started: float
    ended: float
    code: grpc.StatusCode


@dataclass
class Burst:
    """CLIENTS threads sending 20-record upserts back to back until stopped."""

    address: str
    project: str
    auth: tuple[tuple[str, str]]
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.threads = [threading.Thread(target=self._run, args=(c,)) for c in range(CLIENTS)]
        for thread in self.threads:
            thread.start()

    def _run(self, client: int) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = MemoryServiceStub(channel)
            call = 0
            while not self.stop.is_set():
                records = [
                    memory_pb2.Memory(content=f"{client}/{call}/{i}") for i in range(RECORDS)
                ]
                request = memory_pb2.BatchUpsertMemoriesRequest(
                    project_id=self.project, records=records
                )
                started = time.monotonic()
                try:
                    stub.BatchUpsertMemories(request, metadata=self.auth, timeout=30)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as e:
                    code = e.code()
                    time.sleep(0.05)  # a refused call comes back at once: don't spin
                self.outcomes.append(Outcome(client, call, started, time.monotonic(), code))
                call += 1

    def ok(self) -> int:
        return sum(o.code is grpc.StatusCode.OK for o in self.outcomes)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def stored(address: str, project: str, auth: tuple[tuple[str, str]]) -> Counter[tuple[int, int]]:
    """How many records of each (client, call) the table holds."""
    found: Counter[tuple[int, int]] = Counter()
    with grpc.insecure_channel(address) as channel:
        stub, token = MemoryServiceStub(channel), ""
        while True:
            page = stub.ListMemories(
                memory_pb2.ListMemoriesRequest(
                    project_id=project, page_size=1000, page_token=token
                ),
                metadata=auth,
                timeout=60,
            )
            for memory in page.memories:
                client, call, _ = memory.content.split("/")
                found[int(client), int(call)] += 1
            if not (token := page.next_page_token):
                return found


def started(data_dir: Path, address: str) -> Serve:
    serve = Serve(serve_env(data_dir, address, ZERODB_DRAIN_SECONDS=DRAIN))
    serve.wait_for(r"zerodb-batch serving on")
    return serve


def leftovers(data_dir: Path) -> list[psutil.Process]:
    return [
        p for p in psutil.process_iter(["cmdline"])
        if str(data_dir) in " ".join(p.info["cmdline"] or ())
    ]  # fmt: skip


@dataclass
class Stopped:
    """A burst against a `serve` that was sent a signal: when, and when it had exited."""

    address: str
    project: str
    auth: tuple[tuple[str, str]]
    outcomes: list[Outcome]
    signalled: float
    exited: float

    def codes(self) -> Counter[grpc.StatusCode]:
        codes = Counter(o.code for o in self.outcomes)
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
        return codes


def signalled_in_a_burst(data_dir: Path, sig: signal.Signals, code: int) -> Stopped:
    """Start serve and a burst; once 100 batches are acknowledged send `sig`; the burst goes on
    until calls have been made after the process ended (exit status `code`)."""
    address = f"127.0.0.1:{free_port()}"
    serve = started(data_dir, address)
    project = serve.wait_for(r"project_id: (\S+)")[1]
    auth = (("x-api-key", serve.wait_for(r"api_key: (zdb_\S+)")[1]),)
    burst = Burst(address, project, auth)
    try:
        wait_for(lambda: burst.ok() >= 100, "a burst under way")
        signalled = time.monotonic()
        assert serve.stop(sig) == code
        exited = time.monotonic()
        wait_for(lambda: any(o.started > exited for o in burst.outcomes), "calls after the exit")
    finally:
        burst.finish()
    return Stopped(address, project, auth, burst.outcomes, signalled, exited)


def test_sigterm_during_a_burst_drains_and_refuses(data_dir: Path) -> None:
    run = signalled_in_a_burst(data_dir, signal.SIGTERM, 0)
    codes, signalled, exited = run.codes(), run.signalled, run.exited
    in_flight = [o for o in run.outcomes if o.started < signalled < o.ended]
    draining = [o for o in run.outcomes if signalled < o.started and o.ended < exited]
    assert all(o.code is grpc.StatusCode.OK for o in in_flight), "a call in flight was cut off"

    serve = started(data_dir, run.address)  # to read what the first one wrote
    try:
        found = stored(run.address, run.project, run.auth)
    finally:
        assert serve.stop() == 0
    for o in run.outcomes:
        expected = RECORDS if o.code is grpc.StatusCode.OK else 0  # refused: nothing written
        assert found[o.client, o.call] == expected, o
    assert sum(found.values()) == RECORDS * codes[grpc.StatusCode.OK]
    print(
        f"\nSIGTERM: {codes[grpc.StatusCode.OK]} batches acknowledged and stored, "
        f"{len(in_flight)} in flight at the signal all finished, "
        f"{codes[grpc.StatusCode.UNAVAILABLE]} refused (UNAVAILABLE; {len(draining)} of them "
        "during the drain) and not written; "
        f"exit {exited - signalled:.2f} s after the signal"
    )
    assert leftovers(data_dir) == []


def test_sigkill_during_a_burst_then_the_next_start_recovers(data_dir: Path) -> None:
    run = signalled_in_a_burst(data_dir, signal.SIGKILL, -signal.SIGKILL)
    codes, address, project, auth = run.codes(), run.address, run.project, run.auth

    serve = started(data_dir, address)  # adopts the PostgreSQL and Valkey left running
    try:
        found = stored(address, project, auth)
        again = Burst(address, project, auth)  # and takes writes again
        wait_for(lambda: again.ok() >= 10, "writes after the restart")
        again.finish()
    finally:
        assert serve.stop() == 0
    cut = 0
    for o in run.outcomes:
        if o.code is grpc.StatusCode.OK:
            assert found[o.client, o.call] == RECORDS, o  # acknowledged: all there
        else:
            assert found[o.client, o.call] in (0, RECORDS), o  # never half-written
            cut += found[o.client, o.call] == RECORDS
    print(
        f"\nSIGKILL: {codes[grpc.StatusCode.OK]} batches acknowledged, all stored after the "
        f"restart; {codes[grpc.StatusCode.UNAVAILABLE]} failed UNAVAILABLE, of which {cut} "
        "had committed just before the kill (whole); none half-written"
    )
    assert leftovers(data_dir) == []
