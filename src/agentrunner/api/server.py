"""Serve several role apps from one uvicorn server: one socket per role, requests routed
by the local port they arrived on, one lifespan for the whole node."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from agentrunner.logs import get_logger

log = get_logger(__name__)


class PortRouter:
    """An ASGI app that hands each request to the app bound to its local port."""

    def __init__(self, apps: Mapping[int, ASGIApp], lifespan: Callable[[], AbstractAsyncContextManager[None]]) -> None:
        self._apps = dict(apps)
        self._lifespan = lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._run_lifespan(receive, send)
            return
        server = scope.get("server")
        app = self._apps.get(server[1]) if server else None
        if app is None:
            if scope["type"] == "http":
                body = {"error": {"code": "not_found", "message": "no agentrunner role on this port", "trace_id": None}}
                await JSONResponse(body, status_code=404)(scope, receive, send)
            return
        await app(scope, receive, send)

    async def _run_lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        context = self._lifespan()
        try:
            await context.__aenter__()
        except Exception as exc:
            log.exception("start-up failed")
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        try:
            await context.__aexit__(None, None, None)
        except Exception as exc:
            log.exception("shutdown failed")
            await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only then;
    # without it a response's body waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"cannot listen on {host}:{port}: {exc.strerror} (is another agentrunner running?)"
        ) from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


# Forward-secret AEAD suites only (TLS 1.3's own suites are always on and not set here).
MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS:!SHA1"


def modern_tls(context: ssl.SSLContext) -> ssl.SSLContext:
    """Harden a server's TLS context: TLS 1.2 at least, modern ciphers, no renegotiation."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(MODERN_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    return context
