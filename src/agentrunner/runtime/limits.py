"""Concurrency limits: at most `limits.max_concurrency` executions of an agent, at most
PROVIDER_MAX_CONCURRENCY executions per provider and TENANT_MAX_CONCURRENCY per tenant (API
key) run their model and tool calls at once across every worker process. Excess work is
not refused: its message waits, unacknowledged, in the worker that took it (so nothing is
lost if that worker dies) until a slot frees. The execution stays `queued` meanwhile: its
timeout_seconds starts when it runs.

Slots are leases in Redis (in-process in the embedded mode) renewed every third of
SLOT_LEASE_SECONDS while the execution runs, so a worker killed while holding one frees it
within a lease of the store being in use (a waiting taker keeps it in use).

The limits fail closed: when Redis does not answer, a taker waits for it (backing off up
to a second between tries, see `limits_store`), its message unacknowledged; nothing runs
unlimited. A taker's call that timed out may have been applied by Redis: the holder id is
the worker and the execution, so asking again keeps the same slot, and a taker that stops
waiting (shutdown) gives back every scope it asked for. A holder whose renewal does not
answer tries again at once with the same backoff. The store keeps the leases fair across
outages (ports.limits.Slots): time passes on its clock only while it is called, so leases do not
run out while Redis is down or paused for everyone; and a Redis that lost its data
(restarted without persistence, or fresh) refuses new holders for one lease, while
renewals every third of a lease bring the running holders back in.

The fence. A holder cut off from Redis while other processes still reach it (its process
starved of CPU, or one worker partitioned) for the rest of its lease loses its slot, and a
waiting taker may take it. So every model call and tool call of an execution first passes
`HeldSlots.confirmed()`: it goes on at once when a renewal (or the take) confirmed the
slots less than half a lease before (counted from when that call was sent: the lease then
has at least half a lease to run, whoever calls the store; renewals every third of a lease
keep it so). Otherwise it asks the store, renewing; a slot found lost (another holder has
its place: a renewal never adds a holder back beyond the limit) makes the execution give
back every slot and wait for them again as a queued taker does (logged, counted in
`agentrunner_limits_store_waits_total{kind="slot_lost"}`), then go on: nothing is lost and
no call starts beyond the limit. The same wait holds a running execution's next call while
Redis does not answer for more than half a lease since its last renewal (fail closed).

What remains: a call already under way is not stopped. A model or tool call that started
with its slots confirmed, whose process then renews nothing for longer than the rest of
its lease (at least half a lease from the call's start) while the call is still at the
vendor, can overlap a call of the newcomer that took its place. The execution's own status
is not fenced either: one that waits at the fence for its slot again is `running` meanwhile,
so counts of running executions can exceed the limit, their calls never. The half lease
also absorbs a forward step of the Redis host's clock (the store counts at most half a lease
between two calls); repeated steps could end leases early. A fresh Redis (the first start, a
new REDIS_KEY_PREFIX) costs one lease before the first slot is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from agentrunner.background import every
from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.errors import AgentRunnerError
from agentrunner.domain.llm import Completion, LLMRequest, StreamItem, ToolDefinition
from agentrunner.logs import get_logger
from agentrunner.ports.limits import SlotRenewal, Slots
from agentrunner.ports.providers import LLMProvider
from agentrunner.ports.tools import Repeatable, Tool, ToolContext
from agentrunner.runtime.limits_store import Backoff, LimitsStore

log = get_logger(__name__)

POLL_FIRST_SECONDS = 0.02
POLL_MAX_SECONDS = 0.5
# A call starts without asking the store while its slots were confirmed less than this
# part of a lease before (see the module docstring).
FRESH_FRACTION = 0.5


class ConcurrencyLimits:
    """Holds the slots an execution needs while it runs (see the module docstring)."""

    def __init__(
        self,
        slots: Slots,
        *,
        provider_limits: Mapping[str, int],
        lease_seconds: float,
        tenant_limit: int = 0,
        store: LimitsStore | None = None,
    ) -> None:
        self._slots = slots
        self._provider_limits = dict(provider_limits)
        self._tenant_limit = tenant_limit
        self._lease = lease_seconds
        self._store = store if store is not None else LimitsStore()

    def scopes(self, config: AgentConfig, tenant: str | None = None) -> list[tuple[str, int]]:
        """The (scope, limit) pairs an execution of `config` (for `tenant`) needs, in a
        fixed order (so two takers never hold one each of what the other needs)."""
        scopes: list[tuple[str, int]] = []
        if tenant and self._tenant_limit:
            scopes.append((f"tenant:{tenant}", self._tenant_limit))
        if config.limits.max_concurrency is not None:
            scopes.append((f"agent:{config.name}", config.limits.max_concurrency))
        provider = config.llm_config.provider.value
        if provider in self._provider_limits:
            scopes.append((f"provider:{provider}", self._provider_limits[provider]))
        return scopes

    @asynccontextmanager
    async def held(self, config: AgentConfig, holder: str, tenant: str | None = None) -> AsyncIterator[HeldSlots]:
        """Wait for a slot in each scope of `config` (and `tenant`), however long the store
        takes to answer, and hold them (renewed) while the body runs; the body's model and
        tool calls pass the fence of the `HeldSlots` it gets. `holder` names this execution
        in this process: asking again with it keeps the same slots."""
        held = HeldSlots(self._slots, self._store, self.scopes(config, tenant), holder, self._lease)
        if not held.scopes:
            yield held
            return
        await held.take()
        # Every third of a lease; the task label is one for all executions (a metric label).
        renewer = every(self._lease / 3, held.renew, task="slot-renewal", metrics=self._store.metrics)
        try:
            yield held
        finally:
            await asyncio.shield(held.stop_and_release(renewer))


class HeldSlots:
    """The slots one execution holds, renewed, and the fence its calls pass (see the
    module docstring).

    Contract: `confirmed` returns only when every slot is known held for at least half a
    lease more, however long that takes (it waits for the store, and for a slot lost to be
    given again); it raises only when cancelled. `provider` and `tools` wrap what the
    execution calls so that each call passes it first.
    """

    def __init__(
        self,
        slots: Slots,
        store: LimitsStore,
        scopes: list[tuple[str, int]],
        holder: str,
        lease_seconds: float,
    ) -> None:
        self._slots = slots
        self._store = store
        self.scopes = scopes
        self._holder = holder
        self._lease = lease_seconds
        self._confirmed: dict[str, float] = {}  # scope -> when the last call that confirmed it was sent
        self._lost: set[str] = set()
        # One caller of the store at a time: a renewal never adds back a slot the fence has
        # just given back to wait for it again.
        self._lock = asyncio.Lock()

    def provider(self, provider: LLMProvider) -> LLMProvider:
        """`provider`, each of whose calls passes the fence first (itself when no limit applies)."""
        return FencedProvider(provider, self) if self.scopes else provider

    def tools(self, tools: Sequence[Tool]) -> list[Tool]:
        """`tools`, each of whose calls passes the fence first."""
        return [FencedTool(tool, self) for tool in tools] if self.scopes else list(tools)

    async def confirmed(self) -> None:
        """Return once the slots are known held for at least half a lease more (see the
        class contract): at once while the last renewal is fresh."""
        if self._fresh():
            return
        async with self._lock:
            if self._fresh():  # confirmed meanwhile, by a renewal or another call's fence
                return
            await self._renew_all()
            if self._lost:
                await self._take_again()

    def _fresh(self) -> bool:
        if not self.scopes:
            return True
        if self._lost or len(self._confirmed) < len(self.scopes):
            return False
        return time.monotonic() - min(self._confirmed.values()) < self._lease * FRESH_FRACTION

    async def take(self) -> None:
        """Wait for a slot in every scope, asking in their fixed order and giving back what
        was taken when one is full (never holding one while waiting for another)."""
        asked: list[str] = []  # every scope asked for: a call that did not answer may have taken it
        poll = POLL_FIRST_SECONDS
        backoff: Backoff | None = None
        try:
            while True:
                try:
                    if await self._take_each(asked):
                        self._store.answered()
                        return
                    self._store.answered()
                except AgentRunnerError as exc:
                    self._store.failed(exc)
                    if backoff is None:
                        backoff = Backoff()
                        self._store.waited("slot")
                    # What was taken stays taken: asking again with the same holder keeps it.
                    await backoff.pause()
                    continue
                backoff = None
                await self._release(asked)
                asked.clear()
                await asyncio.sleep(poll)
                poll = min(poll * 2, POLL_MAX_SECONDS)
        except BaseException:  # cancelled (shutdown): the message goes back, so must the slots
            await asyncio.shield(self._release(asked))
            raise

    async def _take_each(self, asked: list[str]) -> bool:
        self._confirmed.clear()
        for scope, limit in self.scopes:
            if scope not in asked:
                asked.append(scope)
            sent = time.monotonic()
            if not await self._slots.acquire_slot(scope, self._holder, limit, self._lease):
                return False
            self._confirmed[scope] = sent
        return True

    async def renew(self) -> None:
        """Renew every slot once (`ConcurrencyLimits.held` does it every third of a lease)."""
        async with self._lock:
            await self._renew_all()

    async def _renew_all(self) -> None:
        for scope, limit in self.scopes:
            await self._renew_one(scope, limit)

    async def _renew_one(self, scope: str, limit: int) -> None:
        backoff = Backoff()
        while True:
            sent = time.monotonic()
            try:
                renewal = await self._slots.renew_slot(scope, self._holder, limit, self._lease)
            except AgentRunnerError as exc:
                # Tried again quickly, not a third of a lease later: the lease runs meanwhile.
                self._store.failed(exc)
                await backoff.pause()
                continue
            self._store.answered()
            break
        if renewal is SlotRenewal.LOST:
            if scope not in self._lost:
                log.warning(
                    "concurrency slot lost: its lease ran out while the execution ran (this process did not reach "
                    "the store for the rest of a lease) and another holder has its place; the execution's next "
                    "model or tool call waits for a slot",
                    scope=scope,
                    holder=self._holder,
                )
            self._lost.add(scope)
            self._confirmed.pop(scope, None)
            return
        if renewal is SlotRenewal.BACK:
            log.warning(
                "concurrency slot added back: its lease was lost while the execution ran (the store lost its "
                "data, or this process did not reach it for a lease) and its place was free; the limit holds",
                scope=scope,
                holder=self._holder,
            )
        self._lost.discard(scope)
        self._confirmed[scope] = sent

    async def _take_again(self) -> None:
        """Wait for every slot again as a queued taker does, after giving them all back
        (holding some while waiting for another could deadlock two executions)."""
        self._store.waited("slot_lost")
        log.warning(
            "execution waiting for its concurrency slots again before its next model or tool call: one was lost",
            lost=sorted(self._lost),
            holder=self._holder,
        )
        started = time.monotonic()
        await self._release([scope for scope, _ in self.scopes])
        self._lost.clear()
        await self.take()
        log.warning(
            "concurrency slots taken again after a loss: the execution goes on",
            holder=self._holder,
            waited_seconds=round(time.monotonic() - started, 3),
        )

    async def stop_and_release(self, renewer: asyncio.Task[None]) -> None:
        """Stop renewing (`renewer` is the task that calls `renew`) and give every slot back."""
        renewer.cancel()
        # A renewal may add a holder back: it must be over before the release, or it could
        # add back the slot just given back.
        await asyncio.wait({renewer})
        await self._release([scope for scope, _ in self.scopes])

    async def _release(self, scopes: list[str]) -> None:
        for scope in scopes:
            with contextlib.suppress(AgentRunnerError):  # unreleased: it expires with its lease
                await self._slots.release_slot(scope, self._holder)


class FencedProvider:
    """An `LLMProvider` whose every call (each attempt) passes its execution's fence first."""

    def __init__(self, inner: LLMProvider, held: HeldSlots) -> None:
        self.name = inner.name
        self._inner = inner
        self._held = held

    async def complete(self, request: LLMRequest) -> Completion:
        await self._held.confirmed()
        return await self._inner.complete(request)

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        await self._held.confirmed()
        async for item in self._inner.stream(request):
            yield item

    async def close(self) -> None:
        return None  # the catalog owns the provider it wraps


class FencedTool:
    """A `Tool` whose every call passes its execution's fence first (the wait counts
    toward the tool's timeout_seconds: a call timed out there never ran)."""

    def __init__(self, inner: Tool, held: HeldSlots) -> None:
        self._inner = inner
        self._held = held

    @property
    def definition(self) -> ToolDefinition:
        return self._inner.definition

    @property
    def timeout_seconds(self) -> float:
        return self._inner.timeout_seconds

    @property
    def repeatable(self) -> Repeatable:
        return self._inner.repeatable

    def repeatable_call(self, arguments: dict[str, Any]) -> bool:
        return self._inner.repeatable_call(arguments)

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> str:
        await self._held.confirmed()
        return await self._inner.call(arguments, context)
