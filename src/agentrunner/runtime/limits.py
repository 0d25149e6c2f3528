"""Concurrency limits: at most `limits.max_concurrency` executions of an agent, at most
PROVIDER_MAX_CONCURRENCY executions per provider and TENANT_MAX_CONCURRENCY per tenant (API
key) run at once across every worker process. Excess work is not refused: its message waits, unacknowledged, in the
worker that took it (so nothing is lost if that worker dies) until a slot frees.

Slots are leases in Redis (in-process in the embedded mode) renewed while the execution
runs, so a worker killed while holding one frees it within SLOT_LEASE_SECONDS. When Redis
does not answer for a whole lease, work runs unlimited rather than not at all (and says so
in the log); a slow answer is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from agentrunner.background import spawn
from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.errors import AgentRunnerError
from agentrunner.logs import get_logger
from agentrunner.ports import Slots

log = get_logger(__name__)

POLL_FIRST_SECONDS = 0.02
POLL_MAX_SECONDS = 0.5


class ConcurrencyLimits:
    """Holds the slots an execution needs while it runs (see the module docstring)."""

    def __init__(
        self, slots: Slots, *, provider_limits: Mapping[str, int], lease_seconds: float, tenant_limit: int = 0
    ) -> None:
        self._slots = slots
        self._provider_limits = dict(provider_limits)
        self._tenant_limit = tenant_limit
        self._lease = lease_seconds

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
        """Wait for a slot in each scope of `config` (and `tenant`), hold them (renewed)
        while the body runs."""
        scopes = self.scopes(config, tenant)
        if not scopes:
            yield
            return
        taken = await self._take_all(scopes, holder)
        renewer = spawn(self._renew(taken, holder), name=f"slots-{holder}")
        try:
            yield
        finally:
            renewer.cancel()
            await asyncio.shield(self._release(taken, holder))

    async def _take_all(self, scopes: list[tuple[str, int]], holder: str) -> list[str]:
        poll = POLL_FIRST_SECONDS
        failing_since: float | None = None
        while True:
            taken: list[str] = []
            try:
                for scope, limit in scopes:
                    if not await self._slots.acquire_slot(scope, holder, limit, self._lease):
                        break
                    taken.append(scope)
                else:
                    return taken
                failing_since = None
            except AgentRunnerError as exc:
                # A slow answer is tried again for up to a lease; only a store that stays
                # down lets the work run unlimited.
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= self._lease:
                    log.warning("concurrency limits not enforced: the slot store did not answer", error=exc.message)
                    return taken
            await self._release(taken, holder)
            await asyncio.sleep(poll)
            poll = min(poll * 2, POLL_MAX_SECONDS)

    async def _renew(self, scopes: list[str], holder: str) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            for scope in scopes:
                try:
                    if not await self._slots.renew_slot(scope, holder, self._lease):
                        log.warning("a concurrency slot expired while held", scope=scope, holder=holder)
                except AgentRunnerError as exc:
                    log.warning("concurrency slot not renewed", scope=scope, error=exc.message)

    async def _release(self, scopes: list[str], holder: str) -> None:
        for scope in scopes:
            with contextlib.suppress(AgentRunnerError):  # unreleased: it expires with its lease
                await self._slots.release_slot(scope, holder)
