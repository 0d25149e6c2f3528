"""Heartbeats of a pool's consumers: one that stops answering is restarted, and given up on
after a few restarts.

A consumer (one agent's queue in one pool) beats while it is idle or while each of its
attempts is within the attempt's own timeout. An attempt that overruns its timeout (a
tool that swallows cancellation, a call stuck where `asyncio.wait_for` cannot reach it)
holds the consumer: its beats stop, and within `timeout_seconds` of the last beat the
pool is told, with the number of times that consumer has been found unresponsive in a
row. An attempt that ends resets the count.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from agentrunner.background import cancelled, every
from agentrunner.domain.errors import AgentRunnerError
from agentrunner.logs import get_logger
from agentrunner.ports.metrics import Metrics

log = get_logger(__name__)

# What the pool does with an unresponsive consumer: (agent, execution id of the stuck
# attempt, how many times in a row it was found unresponsive).
UnresponsiveHandler = Callable[[str, str, int], Awaitable[None]]


@dataclass(slots=True)
class _Attempt:
    agent: str
    execution_id: str
    deadline: float


class ConsumerWatchdog:
    """Watches the attempts of one pool, consumer by consumer (see the module docstring)."""

    def __init__(
        self,
        on_unresponsive: UnresponsiveHandler,
        *,
        timeout_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self._on_unresponsive = on_unresponsive
        self._metrics = metrics
        self._timeout = timeout_seconds
        self._clock = clock
        self._interval = min(10.0, timeout_seconds / 6)
        self._attempts: dict[int, _Attempt] = {}
        self._keys = itertools.count()
        self._reported: dict[str, float] = {}
        self._strikes: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def attempt(self, agent: str, execution_id: str, timeout_seconds: float) -> Iterator[None]:
        """Watch one attempt that should end within `timeout_seconds`; an attempt that
        ends (however) clears the consumer's count of strikes."""
        key = next(self._keys)
        self._attempts[key] = _Attempt(agent, execution_id, self._clock() + timeout_seconds)
        ended = False
        try:
            yield
            ended = True
        except asyncio.CancelledError:
            raise  # cut short (shutdown, restart): not a sign of health
        except BaseException:
            ended = True
            raise
        finally:
            del self._attempts[key]
            if ended:
                self._strikes.pop(agent, None)

    def strikes(self, agent: str) -> int:
        """How many times in a row `agent`'s consumer was found unresponsive."""
        return self._strikes.get(agent, 0)

    async def check(self) -> None:
        """One look at every consumer: report those silent for about `timeout_seconds`
        (checks come every `timeout_seconds / 6`, so a report comes within the timeout)."""
        now = self._clock()
        overdue: dict[str, _Attempt] = {}
        for attempt in self._attempts.values():
            earliest = overdue.get(attempt.agent)
            if now > attempt.deadline and (earliest is None or attempt.deadline < earliest.deadline):
                overdue[attempt.agent] = attempt
        for agent in [agent for agent in self._reported if agent not in overdue]:
            del self._reported[agent]  # beating again
        for agent, stuck in overdue.items():
            silent_since = max(stuck.deadline, self._reported.get(agent, stuck.deadline))
            if now - silent_since < self._timeout - self._interval:
                continue
            strikes = self._strikes[agent] = self._strikes.get(agent, 0) + 1
            self._reported[agent] = now  # if it stays stuck, the next report is a timeout later
            log.error(
                "consumer unresponsive: no heartbeat",
                agent=agent,
                execution_id=stuck.execution_id,
                silent_seconds=round(now - stuck.deadline, 1),
                strikes=strikes,
            )
            try:
                await self._on_unresponsive(agent, stuck.execution_id, strikes)
            except AgentRunnerError as exc:
                log.error("handling an unresponsive consumer failed", agent=agent, error=exc.message)

    async def start(self) -> None:
        """Check in the background, six times per timeout."""
        self._task = every(self._interval, self.check, task="consumer-watchdog", metrics=self._metrics)

    async def stop(self) -> None:
        """Stop checking."""
        await cancelled(self._task)
        self._task = None
