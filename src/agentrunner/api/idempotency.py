"""`Idempotency-Key` on every POST: a retried request never runs twice.

The first request with a key runs and its answer is kept (in the state store, so every
replica and a restarted one see it); a retry with the same key and the same body gets that
answer again, byte for byte, with `Idempotent-Replayed: true`; the same key with another
body is refused (409 `idempotency_key_reused`). A retry that arrives while the first is
still running waits for its answer. Keys are scoped to the caller's tenant, its API key
and the path (a key of one tenant never names another's answer; the record keeps its
tenant), and kept `IDEMPOTENCY_TTL_SECONDS` (24 h).

Only successful JSON answers (2xx) are kept: an error started no work, so its retry runs
anew (after the agent was added, the database came back, ...). A request whose process
died leaves its key unanswered; it stops being refreshed and is taken over by the next
retry after `ABANDONED_AFTER_SECONDS`.

Invocations (`claimed_by_route`) cost no write of their own: the route records the key in
the same transaction as the execution it starts (`route_claim`), and a retry is answered
with that execution, waited for as the original was (same id; the same status code when
the original ended within its wait). Nothing to keep after the answer, nothing to take
over after a crash: the execution is the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from datetime import timedelta
from functools import partial

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentrunner.api.errors import error_answer, error_response
from agentrunner.background import every
from agentrunner.domain.errors import AgentRunnerError
from agentrunner.domain.execution import utcnow
from agentrunner.logs import get_logger
from agentrunner.ports.metrics import Metrics
from agentrunner.ports.state import IdempotencyClaim, IdempotencyStore, IdempotentRequest
from agentrunner.tracing import current_tenant

log = get_logger(__name__)

HEADER = b"idempotency-key"
REPLAYED_HEADER = "idempotent-replayed"
MAX_KEY_LENGTH = 255
TOUCH_EVERY_SECONDS = 10.0  # while the first request runs
ABANDONED_AFTER_SECONDS = 30.0  # not touched for this long: its process is gone
POLL_FIRST_SECONDS = 0.02  # a retry waiting for the first request's answer
POLL_MAX_SECONDS = 0.5
_CLAIM = "idempotency_claim"  # where a route that claims the key itself finds it (request.state)


class IdempotencyMiddleware:
    """See the module docstring. Runs inside the API key check (the key scopes it) and the
    body limit (the body it reads is bounded)."""

    def __init__(
        self,
        app: ASGIApp,
        store: IdempotencyStore,
        ttl_seconds: float,
        claimed_by_route: re.Pattern[str] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._store = store
        self._ttl = timedelta(seconds=ttl_seconds)
        self._claimed_by_route = claimed_by_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self._app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        raw_key = headers.get(HEADER)
        if raw_key is None:
            await self._app(scope, receive, send)
            return
        if not 0 < len(raw_key) <= MAX_KEY_LENGTH or not all(0x20 < byte < 0x7F for byte in raw_key):
            message = f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters"
            await error_response(400, "bad_request", message)(scope, receive, send)
            return
        body = await _read_body(receive)
        route = f"{scope['method']} {scope.get('path', '')}?{scope.get('query_string', b'').decode('latin-1')}"
        caller = headers.get(b"x-api-key") or headers.get(b"authorization") or b""
        tenant = current_tenant()  # set by the API key check this runs inside
        key = _sha256((tenant or "").encode(), caller, route.encode(), raw_key)
        fingerprint = _sha256(route.encode(), body)
        if self._claimed_by_route is not None and self._claimed_by_route.fullmatch(scope.get("path", "")):
            claim = IdempotencyClaim(key=key, fingerprint=fingerprint, expired_before=utcnow() - self._ttl)
            scope.setdefault("state", {})[_CLAIM] = claim
            await self._app(scope, _replaying(body), send)
            return
        try:
            earlier = await self._claim(key, fingerprint)
        except AgentRunnerError as exc:
            await error_answer(exc)(scope, receive, send)
            return
        if earlier is not None:
            await self._answer_again(earlier, fingerprint, scope, receive, send)
            return
        await self._run_first(key, body, scope, send)

    async def _claim(self, key: str, fingerprint: str) -> IdempotentRequest | None:
        """None once this request owns the key; the earlier request when it was answered
        or its body differs; waits while an equal earlier request is still running."""
        poll = POLL_FIRST_SECONDS
        while True:
            now = utcnow()
            earlier = await self._store.claim_idempotency_key(
                key,
                fingerprint,
                expired_before=now - self._ttl,
                abandoned_before=now - timedelta(seconds=ABANDONED_AFTER_SECONDS),
                tenant=current_tenant(),
            )
            if earlier is None or earlier.fingerprint != fingerprint or earlier.status_code is not None:
                return earlier
            await asyncio.sleep(poll)
            poll = min(poll * 2, POLL_MAX_SECONDS)

    @staticmethod
    async def _answer_again(
        earlier: IdempotentRequest, fingerprint: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        response = reused_key_response() if earlier.fingerprint != fingerprint else _kept_answer(earlier)
        await response(scope, receive, send)

    async def _run_first(self, key: str, body: bytes, scope: Scope, send: Send) -> None:
        status = 0
        content_type = ""
        chunks: list[bytes] = []
        replay = _replaying(body)

        async def keep(message: Message) -> None:
            nonlocal status, content_type
            if message["type"] == "http.response.start":
                status = message["status"]
                content_type = dict(message.get("headers") or []).get(b"content-type", b"").decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        toucher = every(TOUCH_EVERY_SECONDS, partial(self._touch, key), task="idempotency-touch", metrics=self._metrics)
        try:
            await self._app(scope, replay, keep)
        except BaseException:
            toucher.cancel()
            await asyncio.shield(self._release(key))
            raise
        toucher.cancel()
        if 200 <= status < 300 and content_type.startswith("application/json"):
            await asyncio.shield(self._complete(key, status, b"".join(chunks), content_type))
        else:
            await asyncio.shield(self._release(key))

    async def _touch(self, key: str) -> None:
        with contextlib.suppress(AgentRunnerError):  # the next touch tries again
            await self._store.touch_idempotency_key(key)

    async def _complete(self, key: str, status: int, response: bytes, content_type: str) -> None:
        try:
            await self._store.complete_idempotency_key(key, status, response, content_type)
        except AgentRunnerError as exc:  # answered already; a retry waits, then takes the key over
            log.error("idempotency key answer not kept: a retry may run again", error=exc.message)

    async def _release(self, key: str) -> None:
        try:
            await self._store.release_idempotency_key(key)
        except AgentRunnerError as exc:
            log.error("idempotency key not released: its retries wait until it is abandoned", error=exc.message)


def route_claim(request: Request) -> IdempotencyClaim | None:
    """The request's `Idempotency-Key`, for a route that records it with its own write."""
    claim = request.scope.get("state", {}).get(_CLAIM)
    return claim if isinstance(claim, IdempotencyClaim) else None


def reused_key_response() -> Response:
    return error_response(
        409,
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request body: use a new key for a new request",
    )


def _kept_answer(earlier: IdempotentRequest) -> Response:
    """The answer kept for an earlier request, as it was sent."""
    assert earlier.status_code is not None
    return Response(
        earlier.response,
        status_code=earlier.status_code,
        media_type=earlier.content_type,
        headers={REPLAYED_HEADER: "true"},
    )


def _replaying(body: bytes) -> Receive:
    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()
