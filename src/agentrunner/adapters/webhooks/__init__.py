"""Webhooks out over HTTP (httpx)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from agentrunner.domain.errors import DependencyUnavailableError


class HttpxWebhookSender:
    """A `WebhookSender` on one shared httpx client (connections reused per receiver)."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, timeout_seconds: float) -> int:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        try:
            response = await self._client.post(url, content=body, headers=dict(headers), timeout=timeout_seconds)
        except httpx.TimeoutException:
            raise DependencyUnavailableError(f"no answer within {timeout_seconds:g} s") from None
        except httpx.HTTPError as exc:
            raise DependencyUnavailableError(f"could not reach the webhook: {type(exc).__name__}: {exc}") from None
        return response.status_code

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
