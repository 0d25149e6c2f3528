"""A recording HTTP proxy in front of the model's server: every request body the platform
sent and every answer the server gave, kept in order, so a test can read what reached the
model (a session's earlier turns) and what the server counted (its `usage`). Our test code,
not a stand-in for the server: every byte is the real server's.

It runs aiohttp on a loop of its own in a thread (the tests around it are synchronous). A
client that goes away cancels its handler (`handler_cancellation`), which closes the
upstream request: a cancelled execution reaches the server as the dropped connection a
direct client would make."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

SESSION = web.AppKey("session", ClientSession)
HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}


@dataclass
class Exchange:
    """One request through the proxy: what was sent, and what came back (a JSON body, or
    the raw text of an event stream). `complete` is False when the client left first."""

    path: str
    request: dict[str, Any]
    response: dict[str, Any] | None = None
    stream: str = ""
    complete: bool = False

    def stream_events(self) -> list[dict[str, Any]]:
        """The JSON `data:` payloads of a streamed answer, in order."""
        events: list[dict[str, Any]] = []
        for line in self.stream.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line.removeprefix("data: ")))
        return events

    def reported_usage(self) -> tuple[int, int]:
        """(input, output) tokens as the server reported them, on either wire, streamed or not.

        On Anthropic's wire the prompt is split into uncached, cache-read and cache-written
        tokens; the input is their sum, as the platform records it.
        """
        if self.path.endswith("/messages"):  # Anthropic's Messages
            if self.response is not None:
                usage = self.response["usage"]
                return _anthropic_input(usage), usage["output_tokens"]
            events = self.stream_events()
            start = next(e for e in events if e.get("type") == "message_start")["message"]["usage"]
            delta = [e for e in events if e.get("type") == "message_delta"][-1]["usage"]
            return _anthropic_input(start), delta["output_tokens"]
        usage = self.response["usage"] if self.response is not None else self.stream_events()[-1]["usage"]
        return usage["prompt_tokens"], usage["completion_tokens"]


def _anthropic_input(usage: dict[str, Any]) -> int:
    return sum(
        usage.get(key) or 0 for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    )


@dataclass
class RecordingProxy:
    """The proxy's address and what went through it."""

    port: int
    exchanges: list[Exchange] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _app(upstream: str, record: list[Exchange]) -> web.Application:
    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        exchange = Exchange(request.path, json.loads(body) if body else {})
        record.append(exchange)
        session = request.app[SESSION]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with session.request(
            request.method, f"{upstream}{request.path_qs}", data=body, headers=headers
        ) as answer:
            if answer.content_type != "text/event-stream":
                raw = await answer.read()
                exchange.response = json.loads(raw) if raw else None
                exchange.complete = True
                return web.Response(body=raw, status=answer.status, content_type=answer.content_type)
            relayed = web.StreamResponse(status=answer.status, headers={"Content-Type": "text/event-stream"})
            await relayed.prepare(request)
            async for chunk in answer.content.iter_any():
                exchange.stream += chunk.decode()
                await relayed.write(chunk)
            await relayed.write_eof()
            exchange.complete = True
            return relayed

    async def open_session(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = ClientSession(timeout=ClientTimeout(total=300))
        yield
        await app[SESSION].close()

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.cleanup_ctx.append(open_session)
    app.router.add_route("*", "/{tail:.*}", relay)
    return app


@contextmanager
def recording_proxy(upstream: str) -> Iterator[RecordingProxy]:
    """A proxy to `upstream` on a free loopback port for the block."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_app(upstream, record := list[Exchange]()), handler_cancellation=True)

    # Bound here, so the port is known before the site starts (aiohttp names it nowhere public).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]

    async def start() -> None:
        await runner.setup()
        await web.SockSite(runner, sock).start()

    thread = threading.Thread(target=loop.run_forever, name="recording-proxy", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(start(), loop).result(30)
        yield RecordingProxy(port, record)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
