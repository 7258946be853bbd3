"""GET /metrics over HTTP: a route of the door, or a listener of its own (ZERODB_METRICS_LISTEN,
for when the door is off or metrics belong on another interface)."""

from __future__ import annotations

from aiohttp import web

from zerodb_batch.http.door import Handler, bind
from zerodb_batch.observability.exposition import Exposition


def metrics_handler(exposition: Exposition) -> Handler:
    async def metrics(request: web.Request) -> web.StreamResponse:
        body, content_type = await exposition.scrape(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    return metrics


class MetricsListener:
    """An HTTP server with /metrics only; `port` is the bound port (useful with port 0)."""

    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self.runner = runner
        self.port = port

    @classmethod
    async def start(cls, listen: str, exposition: Exposition) -> MetricsListener:
        sock = bind(listen)
        app = web.Application()
        app.router.add_get("/metrics", metrics_handler(exposition))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        return cls(runner, int(sock.getsockname()[1]))

    async def close(self) -> None:
        await self.runner.cleanup()
