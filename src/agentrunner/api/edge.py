"""What every role's app has: trace ids at the edge, health probes, the error shape."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentrunner.api.access import ApiKey, FailedAuthThrottle, client_address, retry_after, same_secret
from agentrunner.api.errors import DEPENDENCY_RETRY_AFTER_SECONDS, error_answer, error_response, install_error_handlers
from agentrunner.api.idempotency import IdempotencyMiddleware
from agentrunner.domain.errors import AgentRunnerError, BadRequestError
from agentrunner.logs import get_logger
from agentrunner.ports.metrics import Metrics
from agentrunner.ports.state import IdempotencyStore
from agentrunner.ports.tracing import RequestSpan, Tracing
from agentrunner.tracing import Caller, accept_trace_id, as_caller, traced

log = get_logger(__name__)

TRACE_HEADER = "x-trace-id"
READY_CHECK_TIMEOUT_SECONDS = 2.0

ReadinessCheck = Callable[[], Awaitable[None]]


class TraceMiddleware:
    """Give each request a trace id (the caller's `X-Trace-Id` when valid), echo it in the
    response, and answer unexpected errors in the JSON error shape with that trace id. With
    `tracing`, the request is a server span whose trace id is that trace id (or, when the
    caller sent a W3C `traceparent`, the caller's trace, whose id becomes the trace id)."""

    def __init__(self, app: ASGIApp, service: str, tracing: Tracing | None = None) -> None:
        self._app = app
        self._service = service
        self._tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        trace_id = accept_trace_id(headers.get(TRACE_HEADER.encode(), b"").decode("latin-1"))
        started = False
        status = 500
        began = time.perf_counter()

        async def send_with_trace(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), (TRACE_HEADER.encode(), trace_id.encode())]
            await send(message)

        with contextlib.ExitStack() as stack:
            stack.enter_context(traced(trace_id, self._service))
            span: RequestSpan | None = None
            if self._tracing is not None and not _is_probe(str(scope.get("path", ""))):
                text_headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers.items()}
                method, path = str(scope.get("method", "")), str(scope.get("path", ""))
                span = stack.enter_context(self._tracing.request_span(method, path, text_headers))
                if span.caller_trace_id is not None and span.caller_trace_id != trace_id:
                    trace_id = span.caller_trace_id
                    stack.enter_context(traced(trace_id, self._service))
            try:
                await self._app(scope, receive, send_with_trace)
            except AgentRunnerError as exc:  # raised outside a route (a middleware's store call)
                log.warning("request failed", path=scope.get("path"), code=exc.code, error=exc.message)
                if started:
                    raise
                await error_answer(exc)(scope, receive, send_with_trace)
            except Exception:
                log.exception("unhandled error", path=scope.get("path"), method=scope.get("method"))
                if started:
                    raise
                response = error_response(
                    500, "internal_error", "internal error: the log line with this trace_id has the details"
                )
                await response(scope, receive, send_with_trace)
            finally:
                path = str(scope.get("path", ""))
                # Probes run every few seconds: keep them out of INFO.
                emit = log.debug if path.startswith("/health/") else log.info
                emit(
                    "request",
                    method=scope.get("method"),
                    path=path,
                    status=status,
                    duration_ms=round((time.perf_counter() - began) * 1000, 2),
                )
                if span is not None:
                    route = scope.get("route")
                    span.finish(route=getattr(route, "path", None), status=status)


def _is_probe(path: str) -> bool:
    """Health probes and metric scrapes come every few seconds: no span of their own."""
    return path.startswith("/health/") or path == "/metrics"


class KeyRateLimiter:
    """A token bucket per API key: `per_minute` requests a minute, in bursts up to as many.
    Each process counts its own requests."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = per_minute / 60.0
        self._capacity = float(per_minute)
        self._clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # key index -> (tokens, when)

    def wait_seconds(self, key: int) -> float:
        """Take one request from `key`'s bucket: 0 when allowed, else the seconds until it is."""
        now = self._clock()
        tokens, then = self._buckets.get(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - then) * self._rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self._rate


class ApiKeyMiddleware:
    """Require one of `keys` in `X-API-Key` or `Authorization: Bearer` (compared in constant
    time) on every path but the health probes, which orchestrators call without secrets,
    and the `public` ones (a path and everything under it: files that hold no data); the
    request then runs as its key's caller (tenant, admin or not). With a `limiter`, each key
    gets its own request rate (429 with Retry-After past it); `failures` throttles the client
    addresses that keep offering wrong keys (429 with Retry-After, whatever they send).
    Paths under `exempt_prefixes` prove who calls another way (Slack's signature)."""

    def __init__(
        self,
        app: ASGIApp,
        keys: tuple[ApiKey, ...],
        limiter: KeyRateLimiter | None = None,
        public: tuple[str, ...] = (),
        exempt_prefixes: tuple[str, ...] = (),
        failures: FailedAuthThrottle | None = None,
    ) -> None:
        self._app = app
        self._keys = keys
        self._index = {id(key): index for index, key in enumerate(keys)}
        self._limiter = limiter
        self._public = public
        self._exempt = ("/health/", *exempt_prefixes)
        self._failures = failures if failures is not None else FailedAuthThrottle()

    def _open(self, path: str) -> bool:
        return path.startswith(self._exempt) or any(
            path == prefix or path.startswith(f"{prefix}/") for prefix in self._public
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._open(str(scope.get("path", ""))):
            await self._app(scope, receive, send)
            return
        address = client_address(scope)
        blocked = self._failures.wait_seconds(address)
        if blocked > 0:
            await self._too_many(
                f"too many failed authentications from this address: try again in {retry_after(blocked)} s",
                blocked,
                scope,
                receive,
                send,
            )
            return
        key = self._matched(scope)
        if key is None:
            if self._failures.failed(address):
                log.warning("failed authentications throttled", client=address)
            response = error_response(
                401, "unauthorized", "missing or wrong API key: send X-API-Key or Authorization: Bearer"
            )
            response.headers["www-authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        wait = self._limiter.wait_seconds(self._index[id(key)]) if self._limiter is not None else 0.0
        if wait > 0:
            await self._too_many(
                f"too many requests with this API key: try again in {retry_after(wait)} s", wait, scope, receive, send
            )
            return
        with as_caller(Caller(key.tenant, admin=key.admin)):  # the tenant its work is counted for
            await self._app(scope, receive, send)

    @staticmethod
    async def _too_many(message: str, wait: float, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(429, "rate_limited", message)
        response.headers["retry-after"] = retry_after(wait)
        await response(scope, receive, send)

    def _matched(self, scope: Scope) -> ApiKey | None:
        """The key the request offers, if it is one of ours."""
        headers = dict(scope.get("headers") or [])
        offered = headers.get(b"x-api-key")
        authorization = headers.get(b"authorization", b"")
        if offered is None and authorization[:7].lower() == b"bearer ":
            offered = authorization[7:].strip()
        if not offered:
            return None
        return same_secret(offered, self._keys)


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413: at once when Content-Length says
    so; a body without Content-Length (chunked) is read up to the limit first, then
    handed to the app, since the server already holds the framing of declared ones."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self._max_bytes:
                await self._refuse(int(declared), scope, receive, send)
                return
            await self._app(scope, receive, send)
            return
        buffered: list[Message] = []
        size = 0
        while True:
            message = await receive()
            buffered.append(message)
            size += len(message.get("body", b""))
            if size > self._max_bytes:
                await self._refuse(size, scope, receive, send)
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self._app(scope, replay, send)

    async def _refuse(self, size: int, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body of {size}+ bytes is over the limit of {self._max_bytes} bytes (MAX_REQUEST_BYTES)"
        await error_response(413, "payload_too_large", message)(scope, receive, send)


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """What every role app shares: readiness checks, the body size limit and, when auth is
    on, the API keys."""

    readiness: Mapping[str, ReadinessCheck]
    api_keys: tuple[ApiKey, ...] | None = None
    # Failed authentications per client address, shared by the apps of a process.
    failed_auth: FailedAuthThrottle = field(default_factory=FailedAuthThrottle)
    # Reported by /health/ready but not required: the role serves without them, slower.
    advisory: Mapping[str, ReadinessCheck] = field(default_factory=dict)
    max_body_bytes: int = 10 * 1024 * 1024
    # Requests a minute per API key (when auth is on); 0: no limit.
    rate_limit_per_minute: int = 0
    # The node's metrics in Prometheus' text format, and its content type, for `/metrics`.
    metrics: Callable[[], Awaitable[tuple[bytes, str]]] | None = None
    # OpenTelemetry spans (a server span per request), when tracing is on.
    tracing: Tracing | None = None
    # Paths that need no API key because their callers prove themselves otherwise (the
    # Slack routes check Slack's signature; Slack cannot send our keys).
    key_exempt_prefixes: tuple[str, ...] = ()
    # Where POSTs with an `Idempotency-Key` keep their answers; None: the header is ignored.
    idempotency: IdempotencyStore | None = None
    idempotency_ttl_seconds: float = 24 * 3600
    # Where the apps' background tasks (an idempotent request's keep-alive) count their errors.
    background_metrics: Metrics | None = None


async def _valid_unicode_body(request: Request) -> None:
    """Refuse a JSON body with a lone UTF-16 surrogate (`"\\ud800"`): JSON's escapes allow
    it, but it is no Unicode text, and no store, cache or bus could keep it."""
    if "json" not in request.headers.get("content-type", ""):
        return
    body = await request.body()  # read once: the route's parsing reuses it
    if b"\\u" not in body:
        return
    try:
        parsed = json.loads(body)
    except ValueError:
        return  # the route answers invalid JSON its own way
    if not _valid_unicode(parsed):
        raise BadRequestError("the request body contains a lone UTF-16 surrogate (\\ud800-\\udfff): not valid Unicode")


def _valid_unicode(value: Any) -> bool:
    if isinstance(value, str):
        return not any("\ud800" <= character <= "\udfff" for character in value)
    if isinstance(value, dict):
        return all(_valid_unicode(key) and _valid_unicode(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_valid_unicode(item) for item in value)
    return True


def role_app(
    service: str,
    title: str,
    edge: EdgeConfig,
    *,
    public: tuple[str, ...] = (),
    keyed_by_route: re.Pattern[str] | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    """A FastAPI app for one role, with `/health/live`, `/health/ready`, `/docs` and the
    error shape; `edge.api_keys` (when not None) are required on every other path but the
    `public` ones (and what is under them). `keyed_by_route`: the paths whose routes record
    their `Idempotency-Key` themselves (`route_claim`). The caller adds the role's own routes."""
    app = FastAPI(title=title, version="1", dependencies=[Depends(_valid_unicode_body)], **fastapi_kwargs)
    install_error_handlers(app)
    if edge.idempotency is not None:  # innermost: inside the key check and the body limit
        app.add_middleware(
            IdempotencyMiddleware,
            store=edge.idempotency,
            ttl_seconds=edge.idempotency_ttl_seconds,
            claimed_by_route=keyed_by_route,
            metrics=edge.background_metrics,
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=edge.max_body_bytes)
    if edge.api_keys is not None:
        limiter = KeyRateLimiter(edge.rate_limit_per_minute) if edge.rate_limit_per_minute else None
        app.add_middleware(
            ApiKeyMiddleware,
            keys=edge.api_keys,
            limiter=limiter,
            public=public,
            exempt_prefixes=edge.key_exempt_prefixes,
            failures=edge.failed_auth,
        )
    # Added last, so it runs first: even a refused request gets a trace id.
    app.add_middleware(TraceMiddleware, service=service, tracing=edge.tracing)

    @app.get("/health/live", tags=["health"], summary="The process is up")
    async def live() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/health/ready", tags=["health"], summary="The role's dependencies answer")
    async def ready() -> JSONResponse:
        checks = await _run_checks({**edge.readiness, **edge.advisory})
        ok = all(checks[name] == "ok" for name in edge.readiness)
        degraded = sorted(name for name in edge.advisory if checks[name] != "ok")
        body: dict[str, Any] = {"status": "ready" if ok else "not_ready", "service": service, "checks": checks}
        if degraded:
            body["degraded"] = degraded
        if ok:
            return JSONResponse(body)
        return JSONResponse(body, status_code=503, headers={"retry-after": str(DEPENDENCY_RETRY_AFTER_SECONDS)})

    if edge.metrics is not None:
        exposition = edge.metrics

        @app.get("/metrics", tags=["health"], summary="Prometheus metrics of this process", include_in_schema=False)
        async def metrics() -> Response:
            content, content_type = await exposition()
            return Response(content, media_type=content_type)

    return app


async def _run_checks(readiness: Mapping[str, ReadinessCheck]) -> dict[str, str]:
    async def one(check: ReadinessCheck) -> str:
        try:
            await asyncio.wait_for(check(), READY_CHECK_TIMEOUT_SECONDS)
        except TimeoutError:
            return f"no answer within {READY_CHECK_TIMEOUT_SECONDS:g} s"
        except AgentRunnerError as exc:
            return exc.message
        except Exception as exc:  # a check's untranslated error is still "not ready", never a 500
            log.exception("readiness check failed unexpectedly")
            return f"{type(exc).__name__}: {exc}"
        return "ok"

    names = list(readiness)
    results = await asyncio.gather(*(one(readiness[name]) for name in names))
    return dict(zip(names, results, strict=True))
