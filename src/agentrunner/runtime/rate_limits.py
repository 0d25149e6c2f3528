"""Rate limits on model calls: requests and tokens a minute, per agent (`limits.
requests_per_minute`, `limits.tokens_per_minute`) and per provider
(PROVIDER_REQUESTS_PER_MINUTE, PROVIDER_TOKENS_PER_MINUTE), as token buckets shared by
every process through Redis (in-process in the embedded mode).

Every call to the model (each attempt of it) first takes a request from each request
bucket and waits until no token bucket is in debt; afterwards the tokens it used are
debited. A vendor's 429 feeds back: its Retry-After (1 s when it says none) is debited
from the provider's request bucket, so every process pauses that long. Waiting counts
toward the agent's timeout_seconds.

The limits fail closed: when Redis does not answer, a call waits for it (backing off up to
a second between tries, see `limits_store`), never goes unlimited; an execution whose
timeout_seconds runs out meanwhile times out saying so (`waiting_for_store`). Tokens a
call used, or a 429's pause, that Redis does not take are tried again for up to
`DEBIT_RETRY_SECONDS`, then logged once and dropped (the call is over: its answer matters
more than the count).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.errors import AgentRunnerError, LLMRateLimitError
from agentrunner.domain.execution import Usage
from agentrunner.domain.llm import Completion, LLMRequest, StreamItem
from agentrunner.logs import get_logger
from agentrunner.ports.limits import Buckets
from agentrunner.ports.providers import LLMProvider
from agentrunner.runtime.limits_store import Backoff, LimitsStore

log = get_logger(__name__)

DEFAULT_RETRY_AFTER_SECONDS = 1.0
DEBIT_RETRY_SECONDS = 2.0


class RateLimits:
    """Wraps an agent's provider in the buckets that apply to it."""

    def __init__(
        self,
        buckets: Buckets,
        *,
        provider_requests_per_minute: Mapping[str, int],
        provider_tokens_per_minute: Mapping[str, int],
        store: LimitsStore | None = None,
    ) -> None:
        self._buckets = buckets
        self._store = store if store is not None else LimitsStore()
        self._provider_rpm = dict(provider_requests_per_minute)
        self._provider_tpm = dict(provider_tokens_per_minute)

    def wrap(self, provider: LLMProvider, config: AgentConfig) -> LLMProvider:
        """`provider`, limited for `config`'s calls (itself when no limit applies): a
        `RateLimitedProvider` of its own, for one attempt."""
        vendor = config.llm_config.provider.value
        requests = [(f"agent:{config.name}:rpm", config.limits.requests_per_minute)]
        requests.append((f"provider:{vendor}:rpm", self._provider_rpm.get(vendor)))
        tokens = [(f"agent:{config.name}:tpm", config.limits.tokens_per_minute)]
        tokens.append((f"provider:{vendor}:tpm", self._provider_tpm.get(vendor)))
        request_buckets = [(scope, float(rate)) for scope, rate in requests if rate]
        token_buckets = [(scope, float(rate)) for scope, rate in tokens if rate]
        if not request_buckets and not token_buckets:
            return provider
        provider_rpm = self._provider_rpm.get(vendor)
        feedback = (f"provider:{vendor}:rpm", float(provider_rpm)) if provider_rpm else None
        return RateLimitedProvider(provider, self._buckets, request_buckets, token_buckets, feedback, self._store)


class RateLimitedProvider:
    """An `LLMProvider` that takes from its buckets around each call (see the module)."""

    def __init__(
        self,
        inner: LLMProvider,
        buckets: Buckets,
        requests: list[tuple[str, float]],
        tokens: list[tuple[str, float]],
        feedback: tuple[str, float] | None,
        store: LimitsStore,
    ) -> None:
        self.name = inner.name
        self._inner = inner
        self._buckets = buckets
        self._requests = requests
        self._tokens = tokens
        self._feedback = feedback
        self._store = store
        self.waiting_for_store: str | None = None
        """While a call waits for the bucket store to answer: what the store answered last
        (the error), for the timeout's message; None otherwise."""

    async def complete(self, request: LLMRequest) -> Completion:
        await self._before()
        try:
            completion = await self._inner.complete(request)
        except LLMRateLimitError as exc:
            await self._throttled(exc)
            raise
        await self._used(completion.usage)
        return completion

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        await self._before()
        try:
            async for item in self._inner.stream(request):
                if isinstance(item, Completion):
                    await self._used(item.usage)
                yield item
        except LLMRateLimitError as exc:
            await self._throttled(exc)
            raise

    async def close(self) -> None:
        return None  # the catalog owns the provider it wraps

    async def _before(self) -> None:
        for scope, rate in self._requests:
            await self._wait(scope, rate, 1.0)
        for scope, rate in self._tokens:
            await self._wait(scope, rate, 0.0)

    async def _wait(self, scope: str, rate: float, amount: float) -> None:
        backoff: Backoff | None = None
        while True:  # the bucket says how long: sleep exactly that, then take again
            try:
                wait = await self._buckets.take_tokens(scope, rate, amount)
            except AgentRunnerError as exc:
                # Fail closed: the call waits for the store (within the attempt's timeout).
                self._store.failed(exc)
                self.waiting_for_store = exc.message
                if backoff is None:
                    backoff = Backoff()
                    self._store.waited("rate")
                await backoff.pause()
                continue
            self._store.answered()
            self.waiting_for_store = None
            backoff = None
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    async def _used(self, usage: Usage) -> None:
        used = usage.input_tokens + usage.output_tokens
        for scope, rate in self._tokens:
            await self._debit(scope, rate, used, "tokens used not counted: the bucket store did not answer")

    async def _throttled(self, exc: LLMRateLimitError) -> None:
        if self._feedback is None:
            return
        retry_after = exc.context.get("retry_after")
        seconds = float(retry_after) if isinstance(retry_after, int | float) else DEFAULT_RETRY_AFTER_SECONDS
        scope, rate = self._feedback
        # Empty the bucket, then `seconds` of refill into debt: every caller waits that long.
        await self._debit(
            scope,
            rate,
            max(1.0, rate / 60) + rate * seconds / 60,
            "a vendor's 429 not fed back: the bucket store did not answer",
        )
        log.warning("provider throttled: every worker pauses its calls", scope=scope, seconds=seconds)

    async def _debit(self, scope: str, rate: float, amount: float, lost: str) -> None:
        """Debit `amount`, trying again for up to DEBIT_RETRY_SECONDS while the store does
        not answer (a debit applied twice only errs on the side of fewer calls)."""
        backoff = Backoff()
        error = ""
        try:
            async with asyncio.timeout(DEBIT_RETRY_SECONDS):
                while True:
                    try:
                        await self._buckets.debit_tokens(scope, rate, amount)
                    except AgentRunnerError as exc:
                        self._store.failed(exc)
                        error = exc.message
                        await backoff.pause()
                        continue
                    self._store.answered()
                    return
        except TimeoutError:
            log.warning(lost, scope=scope, amount=amount, error=error)
