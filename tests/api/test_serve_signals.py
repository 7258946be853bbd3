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
from typing import Any

import grpc
import psutil

from tests.plugins.checks import wait_for
from tests.plugins.serve import Serve, free_port, serve_env
from zerodb.v1 import load_pb2, memory_pb2
from zerodb.v1.load_pb2_grpc import LoadServiceStub
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

    @property
    def key(self) -> tuple[str, str]:
        return str(self.client), str(self.call)


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


def stored(address: str, project: str, auth: tuple[tuple[str, str]]) -> Counter[tuple[str, str]]:
    """How many records of each (client, call) the table holds (the first two parts of their
    contents: a load's records count under (load id, chunk offset))."""
    found: Counter[tuple[str, str]] = Counter()
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
                found[client, call] += 1
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

    def codes(self, *also: grpc.StatusCode) -> Counter[grpc.StatusCode]:
        codes = Counter(o.code for o in self.outcomes)
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, *also}, codes
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
    # A call that grpc has taken in but not yet handed to our code when the shutdown begins is
    # answered CANCELLED by grpc itself (it never runs), so only at the signal.
    codes, signalled, exited = run.codes(grpc.StatusCode.CANCELLED), run.signalled, run.exited
    in_flight = [o for o in run.outcomes if o.started < signalled < o.ended]
    draining = [o for o in run.outcomes if signalled < o.started and o.ended < exited]
    unrun = [o for o in run.outcomes if o.code is grpc.StatusCode.CANCELLED]
    assert all(o.started < signalled + 1 and o.ended < exited for o in unrun), unrun
    finished = [o for o in in_flight if o.code is grpc.StatusCode.OK]
    assert len(finished) + len([o for o in in_flight if o in unrun]) == len(in_flight)

    serve = started(data_dir, run.address)  # to read what the first one wrote
    try:
        found = stored(run.address, run.project, run.auth)
    finally:
        assert serve.stop() == 0
    for o in run.outcomes:
        expected = RECORDS if o.code is grpc.StatusCode.OK else 0  # refused, unrun: nothing
        assert found[o.key] == expected, o
    assert sum(found.values()) == RECORDS * codes[grpc.StatusCode.OK]
    print(
        f"\nSIGTERM: {codes[grpc.StatusCode.OK]} batches acknowledged and stored, "
        f"of the {len(in_flight)} in flight at the signal {len(finished)} finished; "
        f"{len(unrun)} taken in at the signal never ran (CANCELLED, not written), "
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
            assert found[o.key] == RECORDS, o  # acknowledged: all there
        else:
            assert found[o.key] in (0, RECORDS), o  # never half-written
            cut += found[o.key] == RECORDS
    print(
        f"\nSIGKILL: {codes[grpc.StatusCode.OK]} batches acknowledged, all stored after the "
        f"restart; {codes[grpc.StatusCode.UNAVAILABLE]} failed UNAVAILABLE, of which {cut} "
        "had committed just before the kill (whole); none half-written"
    )
    assert leftovers(data_dir) == []


def chunks(project: str, load_id: str, gate: threading.Event, after: int, pause: float) -> Any:
    """Chunks 0, 1, ...: after `after` of them, wait for `gate`, then one every `pause` seconds
    until 10 are sent."""
    for offset in range(10):
        if offset == after:
            gate.wait(60)
        if offset >= after:
            time.sleep(pause)
        records = [memory_pb2.Memory(content=f"{load_id}/{offset}/{i}") for i in range(RECORDS)]
        yield memory_pb2.StreamUpsertMemoriesRequest(
            project_id=project, load_id=load_id, offset=offset, records=records
        )


def test_sigterm_lets_a_stream_finish_within_the_grace_and_cuts_one_past_it(
    data_dir: Path,
) -> None:
    """With a 3 s grace: a stream that ends 1 s after the signal completes; one that would need
    10 s is cut off UNAVAILABLE, and what it committed is what GetLoad says."""
    address = f"127.0.0.1:{free_port()}"
    serve = Serve(serve_env(data_dir, address, ZERODB_DRAIN_SECONDS="3"))
    serve.wait_for(r"zerodb-batch serving on")
    project = serve.wait_for(r"project_id: (\S+)")[1]
    auth = (("x-api-key", serve.wait_for(r"api_key: (zdb_\S+)")[1]),)
    signalled = threading.Event()
    with grpc.insecure_channel(address) as channel:
        stub = MemoryServiceStub(channel)
        short = stub.StreamUpsertMemories.future(
            chunks(project, "short", signalled, 2, 0.1), metadata=auth, timeout=60
        )
        long = stub.StreamUpsertMemories.future(
            chunks(project, "long", signalled, 2, 1.0), metadata=auth, timeout=60
        )
        get = memory_pb2.ListMemoriesRequest(project_id=project, page_size=1000)
        wait_for(lambda: len(stub.ListMemories(get, metadata=auth).memories) >= 4 * RECORDS,
                 "both streams under way")  # fmt: skip
        serve.proc.send_signal(signal.SIGTERM)
        signalled.set()
        done = short.result(60)
        cut = long.exception(60)
    assert serve.exit_code() == 0
    assert (done.load.state, done.load.inserted) == (load_pb2.LOAD_STATE_DONE, 10 * RECORDS)
    assert isinstance(cut, grpc.RpcError)
    assert cut.code() is grpc.StatusCode.UNAVAILABLE, cut

    serve = started(data_dir, address)
    try:
        with grpc.insecure_channel(address) as channel:
            got = LoadServiceStub(channel).GetLoad(
                load_pb2.GetLoadRequest(project_id=project, load_id="long"), metadata=auth
            )
        found = stored(address, project, auth)
    finally:
        assert serve.stop() == 0
    committed = got.load.chunks_committed
    assert 2 <= committed < 10
    assert {k: n for k, n in found.items() if k[0] == "long"} == {
        ("long", str(offset)): RECORDS for offset in range(committed)
    }  # the chunks GetLoad counts, whole, and nothing more
    assert sum(n for k, n in found.items() if k[0] == "short") == 10 * RECORDS
    print(f"\nSIGTERM, grace 3 s: the long stream was cut after {committed} of 10 chunks")
