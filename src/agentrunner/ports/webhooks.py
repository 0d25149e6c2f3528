"""The webhook sender port."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class WebhookSender(Protocol):
    """POSTs to webhook receivers (an HTTP client)."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, timeout_seconds: float) -> int:
        """The receiver's HTTP status; raises `DependencyUnavailableError` (message:
        `unreachable` or `timeout`, nothing more) when it could not be reached or did not
        answer in time, `EgressRefusedError` when the URL or its address is refused."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
