"""The HTTP face every peer of bench/peers.py shows its load generator: `POST /jobs` with
`{"task_data": ...}` answers `{"result": ...}` once the peer has run the job durably, and
`GET /health/ready` answers 200 once the peer can take jobs.

Runs in the peer's own virtualenv (aiohttp is installed there), started by bench/peers.py
with the repository on PYTHONPATH; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

Job = Callable[[Any], Awaitable[Any]]


def application(job: Job) -> web.Application:
    async def jobs(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"result": await job(body["task_data"])})

    async def ready(_: web.Request) -> web.Response:
        return web.Response(text="ready")

    app = web.Application()
    app.router.add_post("/jobs", jobs)
    app.router.add_get("/health/ready", ready)
    return app


async def serve(port: int, job: Job) -> None:
    """Answer on 127.0.0.1:`port` until SIGTERM/SIGINT."""
    runner = web.AppRunner(application(job), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
