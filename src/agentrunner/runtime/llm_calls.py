"""Calling a provider the way the platform wants: transient failures (rate limits, vendor
errors, timeouts) tried again with exponential backoff and jitter, honouring the vendor's
Retry-After; auth and bad-request errors never tried again; the cost priced once here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from agentrunner.domain.agent import LLMConfig
from agentrunner.domain.errors import AgentRunnerError, LLMUnavailableError
from agentrunner.domain.llm import Completion, LLMRequest, TextDelta
from agentrunner.domain.pricing import cost_usd
from agentrunner.logs import get_logger
from agentrunner.ports.providers import LLMProvider

log = get_logger(__name__)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, AgentRunnerError) and exc.retryable


class _Backoff:
    """Exponential backoff with jitter, but never sooner than the vendor's Retry-After."""

    def __init__(self, base_seconds: float, max_seconds: float) -> None:
        self._exponential = wait_exponential(multiplier=base_seconds, max=max_seconds) + wait_random(0, base_seconds)
        self._max = max_seconds

    def __call__(self, state: RetryCallState) -> float:
        delay = self._exponential(state)
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, AgentRunnerError):
            retry_after = error.context.get("retry_after")
            if isinstance(retry_after, int | float):
                delay = max(delay, min(float(retry_after), self._max))
        return float(delay)


TextSink = Callable[[str], Awaitable[None]]


async def complete_with_retries(
    provider: LLMProvider,
    request: LLMRequest,
    llm: LLMConfig,
    *,
    on_text: TextSink | None = None,
    base_delay_seconds: float = 0.5,
    max_delay_seconds: float = 8.0,
) -> Completion:
    """The provider's answer to `request`, after up to `llm.max_attempts` calls, priced.
    With `on_text`, the answer is streamed and each piece of text handed to it as it comes;
    a stream that fails after its first piece is not tried again (the reader saw it).

    Raises the last `LLMError` when every attempt failed, or the first non-retryable one.
    """
    emitted = False

    async def streamed(request: LLMRequest) -> Completion:
        nonlocal emitted
        assert on_text is not None
        async for item in provider.stream(request):
            if isinstance(item, TextDelta):
                emitted = True
                await on_text(item.text)
            else:
                return item
        raise LLMUnavailableError(f"{provider.name}: the stream ended without a final answer")

    def retryable(exc: BaseException) -> bool:
        return _retryable(exc) and not emitted

    retrying = AsyncRetrying(
        stop=stop_after_attempt(llm.max_attempts),
        wait=_Backoff(base_delay_seconds, max_delay_seconds),
        retry=retry_if_exception(retryable),
        reraise=True,
        before_sleep=lambda state: log.warning(
            "provider call failed, trying again",
            provider=provider.name,
            attempt=state.attempt_number,
            error=str(state.outcome.exception()) if state.outcome else None,
        ),
    )
    completion: Completion = await retrying(provider.complete if on_text is None else streamed, request)
    override = (llm.pricing.input_per_million, llm.pricing.output_per_million) if llm.pricing else None
    price = cost_usd(llm.provider.value, llm.model, completion.usage, override=override)
    return completion.model_copy(update={"cost_usd": price})
