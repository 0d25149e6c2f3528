"""The LLM provider ports: one vendor behind one interface, and the catalogue of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from agentrunner.domain.agent import LLMConfig
from agentrunner.domain.llm import Completion, LLMRequest, StreamItem


class LLMProvider(Protocol):
    """One LLM vendor behind one interface (ARCHITECTURE §7).

    Contract: answers with text and/or tool calls and the vendor's token usage; raises
    `LLMRateLimitError` (with `retry_after` in its context when the vendor said),
    `LLMUnavailableError`, `LLMAuthError` or `LLMBadRequestError`, never an SDK exception;
    makes one attempt (retrying is the caller's policy); never blocks the event loop.
    """

    name: str

    async def complete(self, request: LLMRequest) -> Completion:
        """Ask the model once and return its whole answer."""
        ...

    def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        """Ask the model once and yield its text as it comes (`TextDelta`s), then one final
        `Completion` with the whole text, tool calls and usage."""
        ...

    async def close(self) -> None:
        """Release the SDK client."""
        ...


class ProviderCatalog(Protocol):
    """Finds the LLMProvider an agent's `llm_config` names, and says why one cannot run."""

    def unavailable_reason(self, llm: LLMConfig) -> str | None:
        """Why agents with this `llm_config` cannot run now (missing key, ...), else None."""
        ...

    async def provider_for(self, llm: LLMConfig) -> LLMProvider:
        """The provider client for `llm` (created once, off the event loop, then shared);
        raises `LLMAuthError` when it is not configured."""
        ...

    async def close(self) -> None:
        """Close every provider client."""
        ...
