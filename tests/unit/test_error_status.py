"""An error's status sized for the trailers: what fits is kept, what does not is counted."""

from __future__ import annotations

from google.rpc import error_details_pb2

from zerodb_batch.errors import (
    MAX_TRAILER_STATUS_BYTES,
    InvalidArgument,
    Overloaded,
    Violation,
)


def unpacked(status: object, kind: type) -> object | None:
    for detail in status.details:  # type: ignore[attr-defined]
        found = kind()
        if detail.Unpack(found):
            return found
    return None


def test_a_small_error_is_sent_whole() -> None:
    error = InvalidArgument("bad", violations=[Violation("records[0].id", "too long", "TOO_LONG")])
    assert error.to_trailer_status() == error.to_status()


def test_a_large_error_is_cut_to_the_budget_and_counts_what_it_leaves_out() -> None:
    violations = [Violation(f"updates[{i}].x" + "y" * 300, "d" * 300) for i in range(1000)]
    error = InvalidArgument("m" * 10_000, violations=violations, metadata={"id": "9" * 10_000})
    status = error.to_trailer_status()
    assert status.ByteSize() <= MAX_TRAILER_STATUS_BYTES
    assert len(status.message) <= 512
    info = unpacked(status, error_details_pb2.ErrorInfo)
    bad = unpacked(status, error_details_pb2.BadRequest)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert info.metadata["violations_total"] == "1000"
    assert info.metadata["violations_shown"] == str(len(bad.field_violations)) != "0"
    assert bad.field_violations[0].field.startswith("updates[0].x")  # the first ones are kept


def test_overload_carries_its_retry_delay() -> None:
    error = Overloaded("busy", reason="SERVER_BUSY", retry_after=0.25, max_concurrent_calls=2)
    for status in (error.to_status(), error.to_trailer_status()):
        retry = unpacked(status, error_details_pb2.RetryInfo)
        assert isinstance(retry, error_details_pb2.RetryInfo)
        assert retry.retry_delay.ToMilliseconds() == 250
