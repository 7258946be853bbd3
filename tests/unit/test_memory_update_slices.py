"""Updates go to PostgreSQL a slice at a time, in the order their rows are locked."""

from __future__ import annotations

import asyncio
import random

from zerodb.v1 import memory_pb2
from zerodb_batch.domain.memory_update import UpdateColumns, UpdateParser


def test_slices_hold_the_valid_updates_in_id_order_whatever_the_request_order() -> None:
    """Concurrent batches lock overlapping rows in one order only if every slice follows the
    one before it in id order, by code point (as the statements' COLLATE "C" sorts): upper
    case before lower case, `m10` before `m9`."""
    ids = [f"m{i}" for i in range(300)] + ["B", "a", "Z9", "z"]
    random.Random(7).shuffle(ids)
    updates = [memory_pb2.MemoryUpdate(id=i, importance=0.5) for i in ids]
    updates.append(memory_pb2.MemoryUpdate(id="bad", importance=2.0))  # refused, not sent
    request = memory_pb2.BatchUpdateMemoriesRequest(updates=updates, partial_success=True)
    sent: list[list[str]] = []

    async def send(rows: UpdateColumns) -> None:
        sent.append(list(rows.ids))

    batch, _ = asyncio.run(UpdateParser(request).send_in_slices(125, send))
    assert [len(s) for s in sent] == [124, 125, 55]  # "bad" sorts into the first slice
    assert [i for s in sent for i in s] == sorted(ids)
    assert [ids[n] for n in batch.rows.index] == sorted(ids)
    assert list(batch.failures) == [len(ids)]
