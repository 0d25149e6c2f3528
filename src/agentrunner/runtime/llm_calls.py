"""Calling a provider the way the platform wants: transient failures (rate limits, vendor
errors, timeouts) tried again with exponential backoff and jitter, honouring the vendor's
Retry-After; auth and bad-request errors never tried again; the cost priced once here."""

from __future__ import annotations

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from agentrunner.domain.agent import LLMConfig
from agentrunner.domain.errors import AgentRunnerError
from agentrunner.domain.llm import Completion, LLMRequest
from agentrunner.domain.pricing import cost_usd
from agentrunner.logs import get_logger
from agentrunner.ports import LLMProvider

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


async def complete_with_retries(
    provider: LLMProvider,
    request: LLMRequest,
    llm: LLMConfig,
    *,
    base_delay_seconds: float = 0.5,
    max_delay_seconds: float = 8.0,
) -> Completion:
    """The provider's answer to `request`, after up to `llm.max_attempts` calls, priced.

    Raises the last `LLMError` when every attempt failed, or the first non-retryable one.
    """
    retrying = AsyncRetrying(
        stop=stop_after_attempt(llm.max_attempts),
        wait=_Backoff(base_delay_seconds, max_delay_seconds),
        retry=retry_if_exception(_retryable),
        reraise=True,
        before_sleep=lambda state: log.warning(
            "provider call failed, trying again",
            provider=provider.name,
            attempt=state.attempt_number,
            error=str(state.outcome.exception()) if state.outcome else None,
        ),
    )
    completion: Completion = await retrying(provider.complete, request)
    override = (llm.pricing.input_per_million, llm.pricing.output_per_million) if llm.pricing else None
    price = cost_usd(llm.provider.value, llm.model, completion.usage, override=override)
    return completion.model_copy(update={"cost_usd": price})
