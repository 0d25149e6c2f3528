"""What every role's app has: trace ids at the edge, health probes, the error shape."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentrunner.api.errors import error_response, install_error_handlers
from agentrunner.domain.errors import AgentRunnerError
from agentrunner.logs import get_logger
from agentrunner.tracing import accept_trace_id, traced

log = get_logger(__name__)

TRACE_HEADER = "x-trace-id"
READY_CHECK_TIMEOUT_SECONDS = 2.0

ReadinessCheck = Callable[[], Awaitable[None]]


class TraceMiddleware:
    """Give each request a trace id (the caller's `X-Trace-Id` when valid), echo it in the
    response, and answer unexpected errors in the JSON error shape with that trace id."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self._app = app
        self._service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        trace_id = accept_trace_id(headers.get(TRACE_HEADER.encode(), b"").decode("latin-1"))
        started = False

        async def send_with_trace(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (TRACE_HEADER.encode(), trace_id.encode())]
            await send(message)

        with traced(trace_id, self._service):
            try:
                await self._app(scope, receive, send_with_trace)
            except Exception:
                log.exception("unhandled error", path=scope.get("path"), method=scope.get("method"))
                if started:
                    raise
                response = error_response(500, "internal_error", "internal error: the log line with this trace_id has the details")
                await response(scope, receive, send_with_trace)


def role_app(service: str, title: str, readiness: Mapping[str, ReadinessCheck], **fastapi_kwargs: Any) -> FastAPI:
    """A FastAPI app for one role, with `/health/live`, `/health/ready`, `/docs` and the
    error shape; the caller adds the role's own routes."""
    app = FastAPI(title=title, version="1", **fastapi_kwargs)
    install_error_handlers(app)
    app.add_middleware(TraceMiddleware, service=service)

    @app.get("/health/live", tags=["health"], summary="The process is up")
    async def live() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/health/ready", tags=["health"], summary="The role's dependencies answer")
    async def ready() -> JSONResponse:
        checks = await _run_checks(readiness)
        ok = all(result == "ok" for result in checks.values())
        body = {"status": "ready" if ok else "not_ready", "service": service, "checks": checks}
        return JSONResponse(body, status_code=200 if ok else 503)

    return app


async def _run_checks(readiness: Mapping[str, ReadinessCheck]) -> dict[str, str]:
    async def one(check: ReadinessCheck) -> str:
        try:
            await asyncio.wait_for(check(), READY_CHECK_TIMEOUT_SECONDS)
        except TimeoutError:
            return f"no answer within {READY_CHECK_TIMEOUT_SECONDS:g} s"
        except AgentRunnerError as exc:
            return exc.message
        return "ok"

    names = list(readiness)
    results = await asyncio.gather(*(one(readiness[name]) for name in names))
    return dict(zip(names, results, strict=True))
