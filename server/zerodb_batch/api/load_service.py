"""LoadService: the committed progress of streamed loads, so a broken stream can resume."""

from __future__ import annotations

from zerodb.v1 import load_pb2, load_pb2_grpc
from zerodb_batch import limits
from zerodb_batch.api import Ctx
from zerodb_batch.domain.timestamps import to_timestamp
from zerodb_batch.domain.validate import Checker
from zerodb_batch.errors import NotFound
from zerodb_batch.storage import loads
from zerodb_batch.storage.pool import Database


class LoadServicer(load_pb2_grpc.LoadServiceServicer):
    def __init__(self, db: Database) -> None:
        self._db = db

    async def GetLoad(
        self, request: load_pb2.GetLoadRequest, context: Ctx
    ) -> load_pb2.GetLoadResponse:
        check_load_id(request.load_id)
        async with self._db.connection() as conn:
            progress = await loads.get(conn, request.project_id, request.load_id)
        if progress is None:
            raise NotFound(
                f"no chunk of load {request.load_id!r} was ever committed; start it at offset 0",
                reason="LOAD_NOT_FOUND",
                metadata={"load_id": request.load_id},
            )
        return load_pb2.GetLoadResponse(load=to_message(progress))


def check_load_id(load_id: str) -> None:
    checker = Checker("")
    checker.text("load_id", load_id, limits.MAX_ID_CHARS, required=True)
    checker.raise_if_any("load_id is invalid")


def to_message(p: loads.LoadProgress) -> load_pb2.Load:
    return load_pb2.Load(
        load_id=p.load_id,
        kind=p.kind,
        state=load_pb2.LOAD_STATE_DONE if p.done else load_pb2.LOAD_STATE_RUNNING,
        last_offset=p.last_offset,
        next_offset=p.next_offset,
        chunks_committed=p.chunks_committed,
        chunks_skipped=p.chunks_skipped,
        inserted=p.inserted,
        updated=p.updated,
        failed=p.failed,
        create_time=to_timestamp(p.create_time),
        update_time=to_timestamp(p.update_time),
    )
