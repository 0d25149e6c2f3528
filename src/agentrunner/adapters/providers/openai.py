"""LLMProvider for OpenAI Chat Completions (and any server that speaks it) via the `openai` SDK."""

from __future__ import annotations

import time

import openai
from openai import AsyncOpenAI

from agentrunner.domain.errors import (
    LLMAuthError,
    LLMBadRequestError,
    LLMError,
    LLMRateLimitError,
    LLMUnavailableError,
)
from agentrunner.domain.execution import Usage
from agentrunner.domain.llm import Completion, LLMRequest
from agentrunner.domain.pricing import cost_usd


def translate_error(exc: openai.OpenAIError) -> LLMError:
    """The agentrunner error for an `openai` SDK exception (the one place they are mapped)."""
    detail = f"openai: {exc}"
    if isinstance(exc, openai.RateLimitError):
        retry_after = exc.response.headers.get("retry-after")
        return LLMRateLimitError(detail, retry_after=float(retry_after) if retry_after else None)
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return LLMAuthError(f"{detail} (check OPENAI_API_KEY)")
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError | openai.InternalServerError):
        return LLMUnavailableError(detail)
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return LLMUnavailableError(detail)
        return LLMBadRequestError(detail, status=exc.status_code)
    return LLMUnavailableError(detail)


class OpenAIProvider:
    """Chat Completions through `AsyncOpenAI`; retries are left to the caller's policy."""

    name = "openai"

    def __init__(self, *, api_key: str, base_url: str | None = None, timeout: float = 120.0) -> None:
        self._client = AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)

    async def complete(self, request: LLMRequest) -> Completion:
        started = time.perf_counter()
        try:
            response = await self._client.chat.completions.create(
                model=request.model,
                messages=[{"role": m.role, "content": m.content} for m in request.messages],  # type: ignore[misc]
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                stop=request.stop,
            )
        except openai.OpenAIError as exc:
            raise translate_error(exc) from exc
        choice = response.choices[0] if response.choices else None
        usage = Usage(
            input_tokens=response.usage.prompt_tokens if response.usage else 0,
            output_tokens=response.usage.completion_tokens if response.usage else 0,
        )
        return Completion(
            text=(choice.message.content or "") if choice else "",
            finish_reason=choice.finish_reason if choice else None,
            usage=usage,
            cost_usd=cost_usd(self.name, request.model, usage),
            latency_ms=(time.perf_counter() - started) * 1000,
            request_id=response.id,
        )

    async def close(self) -> None:
        await self._client.close()
