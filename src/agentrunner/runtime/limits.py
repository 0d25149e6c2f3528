"""Concurrency limits: at most `limits.max_concurrency` executions of an agent, at most
PROVIDER_MAX_CONCURRENCY executions per provider and TENANT_MAX_CONCURRENCY per tenant (API
key) run at once across every worker process. Excess work is not refused: its message
waits, unacknowledged, in the worker that took it (so nothing is lost if that worker dies)
until a slot frees. The execution stays `queued` meanwhile: its timeout_seconds starts
when it runs.

Slots are leases in Redis (in-process in the embedded mode) renewed every third of
SLOT_LEASE_SECONDS while the execution runs, so a worker killed while holding one frees it
within a lease of the store being in use (a waiting taker keeps it in use).

The limits fail closed: when Redis does not answer, a taker waits for it (backing off up
to a second between tries, see `limits_store`), its message unacknowledged; nothing runs
unlimited. A taker's call that timed out may have been applied by Redis: the holder id is
the worker and the execution, so asking again keeps the same slot, and a taker that stops
waiting (shutdown) gives back every scope it asked for. A holder whose renewal does not
answer tries again at once with the same backoff; one whose lease was lost adds itself
back whatever the limit (it is running). The store keeps the leases fair across outages
(ports.Slots): time passes on its clock only while it is called, so leases do not run out
while Redis is down or paused for everyone; and a Redis that lost its data (restarted
without persistence, or fresh) refuses new holders for one lease, while renewals every
third of a lease bring the running holders back in.

What remains: a holder cut off from Redis while other processes still reach it (a network
partition of one worker, or its process starved of CPU) for more than two thirds of a
lease, past its last renewal, loses its lease: a waiting taker may take the slot before the
holder adds itself back, and then one execution more than the limit runs until one of the
two ends (the holder logs "concurrency slot added back"). The same holds for a holder cut
off for longer than the grace after Redis lost its data. A fresh Redis (the first start, a
new REDIS_KEY_PREFIX) also costs one lease before the first slot is given.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from agentrunner.background import spawn
from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.errors import AgentRunnerError
from agentrunner.logs import get_logger
from agentrunner.ports import Slots
from agentrunner.runtime.limits_store import Backoff, LimitsStore

log = get_logger(__name__)

POLL_FIRST_SECONDS = 0.02
POLL_MAX_SECONDS = 0.5


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
    async def held(self, config: AgentConfig, holder: str, tenant: str | None = None) -> AsyncIterator[None]:
        """Wait for a slot in each scope of `config` (and `tenant`), however long the store
        takes to answer, and hold them (renewed) while the body runs. `holder` names this
        execution in this process: asking again with it keeps the same slots."""
        scopes = self.scopes(config, tenant)
        if not scopes:
            yield
            return
        taken = await self._take_all(scopes, holder)
        renewer = spawn(self._renew(taken, holder), name=f"slots-{holder}")
        try:
            yield
        finally:
            await asyncio.shield(self._stop_and_release(renewer, taken, holder))

    async def _take_all(self, scopes: list[tuple[str, int]], holder: str) -> list[str]:
        asked: list[str] = []  # every scope asked for: a call that did not answer may have taken it
        poll = POLL_FIRST_SECONDS
        backoff: Backoff | None = None
        try:
            while True:
                try:
                    if await self._take_each(scopes, holder, asked):
                        self._store.answered()
                        return asked
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
                await self._release(asked, holder)
                asked.clear()
                await asyncio.sleep(poll)
                poll = min(poll * 2, POLL_MAX_SECONDS)
        except BaseException:  # cancelled (shutdown): the message goes back, so must the slots
            await asyncio.shield(self._release(asked, holder))
            raise

    async def _take_each(self, scopes: list[tuple[str, int]], holder: str, asked: list[str]) -> bool:
        for scope, limit in scopes:
            if scope not in asked:
                asked.append(scope)
            if not await self._slots.acquire_slot(scope, holder, limit, self._lease):
                return False
        return True

    async def _renew(self, scopes: list[str], holder: str) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            for scope in scopes:
                await self._renew_one(scope, holder)

    async def _renew_one(self, scope: str, holder: str) -> None:
        backoff = Backoff()
        while True:
            try:
                kept = await self._slots.renew_slot(scope, holder, self._lease)
            except AgentRunnerError as exc:
                # Tried again quickly, not a third of a lease later: the lease runs meanwhile.
                self._store.failed(exc)
                await backoff.pause()
                continue
            self._store.answered()
            if not kept:
                log.warning(
                    "concurrency slot added back: its lease was lost while the execution ran (the store lost "
                    "its data, or this process did not reach it for a lease); the limit may be exceeded by "
                    "one until an execution ends",
                    scope=scope,
                    holder=holder,
                )
            return

    async def _stop_and_release(self, renewer: asyncio.Task[None], scopes: list[str], holder: str) -> None:
        renewer.cancel()
        # A renewal adds a lost holder back: it must be over before the release, or it
        # could add back the slot just given back.
        await asyncio.wait({renewer})
        await self._release(scopes, holder)

    async def _release(self, scopes: list[str], holder: str) -> None:
        for scope in scopes:
            with contextlib.suppress(AgentRunnerError):  # unreleased: it expires with its lease
                await self._slots.release_slot(scope, holder)
