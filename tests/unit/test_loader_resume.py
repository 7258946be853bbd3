"""The loader against a scripted server (grpc_testing): a stream that breaks mid-way resumes.

The test plays the server: it takes each RPC the loader makes, looks at what was sent, and answers
(or breaks the stream) as a script says. No network, no database.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc_testing
import pytest

from zerodb.v1 import common_pb2, load_pb2, memory_pb2
from zerodb_batch.errors import InvalidArgument, Violation
from zerodb_batch.load_kinds import MEMORIES
from zerodb_batch.loader import Chunking, Loader, LoaderError, Outcome

MEMORY = memory_pb2.DESCRIPTOR.services_by_name["MemoryService"]
LOADS = load_pb2.DESCRIPTOR.services_by_name["LoadService"]
STREAM = MEMORY.methods_by_name["StreamUpsertMemories"]
GET_LOAD = LOADS.methods_by_name["GetLoad"]
OK, NOT_FOUND = grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND


class Run:
    """The loader on a thread, talking to the test through a grpc_testing channel."""

    def __init__(self, path: Path, *, resume: bool = False, retries: int = 5) -> None:
        self.channel = grpc_testing.channel([MEMORY, LOADS], grpc_testing.strict_real_time())
        self.sleeps: list[float] = []
        loader = Loader(
            self.channel,
            MEMORIES,
            "p1",
            "zdb_key",
            "load-x",
            Chunking(2),
            retries=retries,
            sleep=self.sleeps.append,
            progress=False,
        )
        self.result: list[Outcome | BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(loader, path, resume), daemon=True)
        self.thread.start()

    def _run(self, loader: Loader, path: Path, resume: bool) -> None:
        try:
            self.result.append(loader.run(path, resume=resume))
        except BaseException as e:
            self.result.append(e)

    def get_load(self, next_offset: int | None, records: int | None = None) -> None:
        """Answer the loader's GetLoad: committed up to next_offset - 1, or NOT_FOUND. The load
        counts `records` written (by default two a chunk, as Chunking(2) cuts a clean file)."""
        metadata, request, rpc = self.channel.take_unary_unary(GET_LOAD)
        assert (request.load_id, dict(metadata)["x-api-key"]) == ("load-x", "zdb_key")
        if next_offset is None:
            rpc.terminate(load_pb2.GetLoadResponse(), (), NOT_FOUND, "no such load")
        else:
            written = 2 * next_offset if records is None else records
            load = load_pb2.Load(
                load_id="load-x",
                last_offset=next_offset - 1,
                next_offset=next_offset,
                inserted=written - 1 if written else 0,
                updated=1 if written else 0,
            )
            rpc.terminate(load_pb2.GetLoadResponse(load=load), (), OK, "")

    def stream(self, chunks: int) -> tuple[Any, list[memory_pb2.StreamUpsertMemoriesRequest]]:
        """Take a stream and its first `chunks` messages."""
        _, rpc = self.channel.take_stream_unary(STREAM)
        # The loader sends chunk messages serialized (grpc_testing passes them on as they are).
        requests = [rpc.take_request() for _ in range(chunks)]
        return rpc, list(map(memory_pb2.StreamUpsertMemoriesRequest.FromString, requests))

    def outcome(self) -> Outcome:
        self.thread.join(10)
        assert self.result, "the loader did not finish"
        result = self.result[0]
        if isinstance(result, BaseException):
            raise result
        return result


def jsonl(tmp_path: Path, n: int, bad_at: tuple[int, ...] = ()) -> Path:
    """n records, one a line; the given (1-based) lines are not JSON."""
    lines = [json.dumps({"content": f"fact {i}"}) for i in range(n)]
    for at in bad_at:
        lines.insert(at - 1, "not json")
    path = tmp_path / "facts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def done(
    last_offset: int, failures: Sequence[common_pb2.RecordFailure] = ()
) -> memory_pb2.StreamUpsertMemoriesResponse:
    load = load_pb2.Load(
        load_id="load-x",
        state=load_pb2.LOAD_STATE_DONE,
        last_offset=last_offset,
        next_offset=last_offset + 1,
        failed=len(failures),
    )
    return memory_pb2.StreamUpsertMemoriesResponse(load=load, failures=failures)


def contents(requests: list[memory_pb2.StreamUpsertMemoriesRequest]) -> list[str]:
    return [r.content for request in requests for r in request.records]


def test_broken_stream_resumes_from_get_load(tmp_path: Path) -> None:
    run = Run(jsonl(tmp_path, 9, bad_at=(4,)))  # 9 records, 2 a chunk: offsets 0..4
    run.get_load(None)  # a new load
    rpc, first = run.stream(3)
    assert [m.offset for m in first] == [0, 1, 2]
    assert contents(first) == [f"fact {i}" for i in range(6)]
    assert not any(m.final for m in first)
    rpc.terminate(None, (), grpc.StatusCode.UNAVAILABLE, "connection reset")

    run.get_load(2)  # the server had committed chunks 0 and 1 only
    rpc, rest = run.stream(3)
    assert [m.offset for m in rest] == [2, 3, 4]
    assert contents(rest) == [f"fact {i}" for i in range(4, 9)]
    assert [m.final for m in rest] == [False, False, True]  # the file's last chunk says so
    assert all(m.load_id == "load-x" and m.partial_success for m in rest)
    rpc.requests_closed()
    failure = common_pb2.RecordFailure(
        offset=3,
        index=1,
        error=InvalidArgument(
            "bad", violations=[Violation("records[1].importance", "out of range")]
        ).to_status(),
    )
    rpc.terminate(done(4, [failure]), (), OK, "")

    outcome = run.outcome()
    assert run.sleeps == [1.0]
    assert outcome.bad_lines == 1
    # chunk 3 is facts 6 and 7; fact 7 sits on line 9 (the bad line 4 pushed it down one)
    assert outcome.failures == [(9, "records[1].importance: out of range")]


def test_resume_skips_the_committed_chunks(tmp_path: Path) -> None:
    run = Run(jsonl(tmp_path, 7), resume=True)
    run.get_load(3)
    rpc, sent = run.stream(1)
    assert sent[0].offset == 3 and contents(sent) == ["fact 6"] and sent[0].final
    rpc.requests_closed()
    rpc.terminate(done(3), (), OK, "")
    assert run.outcome().load.last_offset == 3


def test_resume_of_a_finished_load_resends_its_last_chunk_to_close_it(tmp_path: Path) -> None:
    run = Run(jsonl(tmp_path, 4), resume=True)
    run.get_load(2)
    rpc, sent = run.stream(1)
    assert sent[0].offset == 1 and sent[0].final  # a duplicate: the server skips it, load done
    rpc.requests_closed()
    rpc.terminate(done(1), (), OK, "")
    assert run.outcome().load.state == load_pb2.LOAD_STATE_DONE


def test_resume_with_nothing_committed_is_an_error_not_a_fresh_load(tmp_path: Path) -> None:
    """A regenerated file has another default load id: resuming it would load it afresh."""
    run = Run(jsonl(tmp_path, 4), resume=True)
    run.get_load(None)
    with pytest.raises(LoaderError, match="nothing to resume"):
        run.outcome()


def test_resume_with_another_chunking_is_refused(tmp_path: Path) -> None:
    """Committed chunks 0-2 held 15 records (started with 5 a chunk); here they hold 6: resuming
    at offset 3 would skip records 6-14, never loaded."""
    run = Run(jsonl(tmp_path, 20), resume=True)
    run.get_load(3, records=15)
    with pytest.raises(LoaderError, match=r"holding 15 record.*hold 6 with --chunk-size 2"):
        run.outcome()


def test_a_new_load_refuses_to_continue_an_old_one(tmp_path: Path) -> None:
    run = Run(jsonl(tmp_path, 4))
    run.get_load(1)
    with pytest.raises(LoaderError, match="--resume"):
        run.outcome()


def test_gives_up_after_its_retries_and_not_on_other_errors(tmp_path: Path) -> None:
    run = Run(jsonl(tmp_path, 2), retries=1)
    run.get_load(None)
    rpc, _ = run.stream(1)
    rpc.terminate(None, (), grpc.StatusCode.UNAVAILABLE, "down")
    run.get_load(None)  # nothing committed: no progress, so the retry budget is not renewed
    rpc, _ = run.stream(1)
    rpc.terminate(None, (), grpc.StatusCode.UNAVAILABLE, "down")
    with pytest.raises(grpc.RpcError) as caught:
        run.outcome()
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE

    refused = Run(jsonl(tmp_path, 2))
    refused.get_load(None)
    rpc, _ = refused.stream(1)
    rpc.terminate(None, (), grpc.StatusCode.PERMISSION_DENIED, "not yours")
    with pytest.raises(grpc.RpcError):
        refused.outcome()
    assert refused.sleeps == []


def test_a_file_without_records_is_refused_before_any_call(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\nnot json\n")
    run = Run(path)
    with pytest.raises(LoaderError, match="no valid record"):
        run.outcome()
