"""One thin servicer per service (`*_service.py`), and what they share: the per-item results
of write batches and the streamed-load engine."""

from typing import Any, TypeAlias

import grpc

# A servicer method's context. Generic in the type stubs only; quoted so that nothing subscripts
# the runtime class.
Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
