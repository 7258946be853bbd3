"""A streamed memory load while `serve`'s embedded PostgreSQL is SIGKILLed (its postmaster, by
PID): the client gets UNAVAILABLE (not INTERNAL, and not a hang until its deadline), health goes
NOT_SERVING, and once the supervisor has PostgreSQL back the load resumes from GetLoad's
`next_offset`, leaving every record in the table exactly once."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from tests.api.test_serve_postgres_death import checkpointer, health, postmaster
from tests.plugins.checks import retry_unavailable, wait_for
from tests.plugins.serve import Serve, free_port, serve_env
from zerodb.v1 import load_pb2, memory_pb2
from zerodb.v1.load_pb2_grpc import LoadServiceStub
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub

CHUNKS, RECORDS = 40, 250  # 10,000 records
KILL_AFTER = 10  # chunks sent before the kill
DEADLINE = 60.0  # the stream's client deadline


def chunk(project: str, offset: int) -> memory_pb2.StreamUpsertMemoriesRequest:
    """Records without ids: a chunk written twice would leave its contents twice."""
    return memory_pb2.StreamUpsertMemoriesRequest(
        project_id=project,
        load_id="killed-load",
        offset=offset,
        records=[memory_pb2.Memory(content=f"{offset}/{i}") for i in range(RECORDS)],
    )


def paused(project: str, sent: threading.Event, resume: threading.Event) -> Iterator[object]:
    """Every chunk, pausing after KILL_AFTER of them until the test has killed PostgreSQL."""
    for offset in range(CHUNKS):
        if offset == KILL_AFTER:
            sent.set()
            resume.wait(60)
        yield chunk(project, offset)


def next_offset(
    loads: LoadServiceStub, get: load_pb2.GetLoadRequest, auth: tuple[tuple[str, str]]
) -> int:
    """Where the load resumes: GetLoad's next_offset, or 0 if no chunk is committed."""
    try:
        return loads.GetLoad(get, metadata=auth).load.next_offset
    except grpc.RpcError as e:
        if e.code() is not grpc.StatusCode.NOT_FOUND:
            raise
        return 0


def contents(stub: MemoryServiceStub, project: str, auth: tuple[tuple[str, str]]) -> list[str]:
    found, token = [], ""
    while True:
        page = stub.ListMemories(
            memory_pb2.ListMemoriesRequest(project_id=project, page_size=1000, page_token=token),
            metadata=auth,
        )
        found += [m.content for m in page.memories]
        if not (token := page.next_page_token):
            return found


def test_a_load_survives_a_killed_postgres(data_dir: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    serve = Serve(serve_env(data_dir, address))
    serve.wait_for(r"zerodb-batch serving on")
    project = serve.wait_for(r"project_id: (\S+)")[1]
    auth = (("x-api-key", serve.wait_for(r"api_key: (zdb_\S+)")[1]),)
    try:
        with grpc.insecure_channel(address) as channel:
            memories, loads = MemoryServiceStub(channel), LoadServiceStub(channel)
            sent, resume = threading.Event(), threading.Event()
            call = memories.StreamUpsertMemories.future(
                paused(project, sent, resume), metadata=auth, timeout=DEADLINE
            )
            assert sent.wait(60)
            get = load_pb2.GetLoadRequest(project_id=project, load_id="killed-load")
            wait_for(lambda: next_offset(loads, get, auth) == KILL_AFTER, "chunks committed")
            killed = postmaster(data_dir)
            held = checkpointer(killed)
            held.suspend()  # while it lives, PostgreSQL cannot start again
            try:
                os.kill(killed.pid, signal.SIGKILL)
                at_kill = time.monotonic()
                resume.set()
                error = call.exception(DEADLINE + 10)
                failed_in = time.monotonic() - at_kill
                assert isinstance(error, grpc.RpcError)
                assert error.code() is grpc.StatusCode.UNAVAILABLE, error
                wait_for(lambda: health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING,
                         "NOT_SERVING")  # fmt: skip
            finally:
                held.resume()

            # Chunks commit asynchronously (synchronous_commit off): the kill may take the
            # newest with it, and their progress with them, so GetLoad and the table agree.
            at = retry_unavailable(lambda: next_offset(loads, get, auth))
            assert at <= KILL_AFTER

            def resume() -> memory_pb2.StreamUpsertMemoriesResponse:
                start = next_offset(loads, get, auth)  # what a loader does on each attempt
                rest = (chunk(project, offset) for offset in range(start, CHUNKS))
                return memories.StreamUpsertMemories(rest, metadata=auth, timeout=DEADLINE)

            done = retry_unavailable(resume)
            assert done.load.state == load_pb2.LOAD_STATE_DONE
            assert done.load.inserted == CHUNKS * RECORDS
            stored = contents(memories, project, auth)
        print(
            f"\nstream UNAVAILABLE {failed_in:.2f} s after the kill; resumed at chunk {at} "
            f"of {CHUNKS}; {len(stored)} records stored"
        )
        assert sorted(stored) == sorted(f"{o}/{i}" for o in range(CHUNKS) for i in range(RECORDS))
    finally:
        assert serve.stop() == 0
