"""Webhooks out over HTTP (httpx), through the egress guard."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from agentrunner.adapters.egress import EgressGuard
from agentrunner.domain.egress import TIMEOUT, UNREACHABLE, check_webhook_url
from agentrunner.domain.errors import DependencyUnavailableError


class HttpxWebhookSender:
    """A `WebhookSender` on one shared httpx client (connections reused per receiver),
    each connection opened to an address the guard checked."""

    def __init__(self, guard: EgressGuard | None = None) -> None:
        self._guard = guard or EgressGuard()
        self._client: httpx.AsyncClient | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, timeout_seconds: float) -> int:
        check_webhook_url(url, self._guard.policy)
        if self._client is None:
            await self._guard.load_tls()  # the node loads it at start; a guard of our own, here, off the loop
            self._client = self._guard.client(timeout=timeout_seconds)
        try:
            response = await self._client.post(url, content=body, headers=dict(headers), timeout=timeout_seconds)
        # The driver's message names addresses and internals: the caller (and the delivery
        # record) reads a coarse reason; the cause stays chained for our own tracebacks.
        except httpx.TimeoutException as exc:
            raise DependencyUnavailableError(TIMEOUT) from exc
        except httpx.HTTPError as exc:
            raise DependencyUnavailableError(UNREACHABLE) from exc
        return response.status_code

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
