"""The store behind the limits (concurrency slots, rate-limit buckets) as this process
sees it, and how the limits wait for it when it does not answer.

Limits fail closed: when Redis does not answer, work waits for it (backing off, at most
`BACKOFF_MAX_SECONDS` between tries), it never runs unlimited. Each process says so once
per outage: one warning at the first failure, one line when the store answers again (with
how long it did not), the gauge `agentrunner_limits_store_unavailable` meanwhile, and the
advisory check `limits` of `/health/ready` (`ready` all the same: nothing fails, work waits).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from agentrunner.domain.errors import AgentRunnerError, DependencyUnavailableError
from agentrunner.logs import get_logger
from agentrunner.ports.metrics import Metrics

log = get_logger(__name__)

BACKOFF_FIRST_SECONDS = 0.05
BACKOFF_MAX_SECONDS = 1.0


class Backoff:
    """Exponential pauses between tries of a store that did not answer: 50 ms, doubling,
    at most `BACKOFF_MAX_SECONDS`."""

    def __init__(self) -> None:
        self._next = BACKOFF_FIRST_SECONDS

    async def pause(self) -> None:
        """Sleep the next pause, and lengthen the one after."""
        await asyncio.sleep(self._next)
        self._next = min(self._next * 2, BACKOFF_MAX_SECONDS)


class LimitsStore:
    """Whether the limits' store answers, for the logs, `/health/ready` and the metrics.

    Contract: `failed` and `answered` never raise and never block; the first failure after
    the store answered (or since start) logs one warning, the first answer after failures
    logs one line with the outage's duration; every waiter counts once in
    `agentrunner_limits_store_waits{kind}`.
    """

    def __init__(self, *, metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._metrics = metrics
        self._clock = clock
        self._down_since: float | None = None
        self._error = ""

    @property
    def metrics(self) -> Metrics | None:
        """Where this process's limits count (and their background renewals their errors)."""
        return self._metrics

    @property
    def down(self) -> bool:
        """True from a failed call to the next answered one."""
        return self._down_since is not None

    def failed(self, error: AgentRunnerError) -> None:
        """A call to the store did not answer: the outage starts (logged once), or goes on."""
        self._error = error.message
        if self._down_since is not None:
            return
        self._down_since = self._clock()
        log.warning(
            "limits waiting: their store did not answer; work that needs a slot or a rate-limit token waits "
            "for it (never runs unlimited)",
            error=error.message,
        )
        if self._metrics is not None:
            self._metrics.limits_store_unavailable(True)

    def answered(self) -> None:
        """A call to the store answered: an outage in course ends (logged once)."""
        if self._down_since is None:
            return
        seconds = self._clock() - self._down_since
        self._down_since = None
        log.info("limits store answering again: waiting work goes on", outage_seconds=round(seconds, 3))
        if self._metrics is not None:
            self._metrics.limits_store_unavailable(False)

    def waited(self, kind: str) -> None:
        """One taker (`slot` or `rate`) starts waiting for the store."""
        if self._metrics is not None:
            self._metrics.limits_store_waited(kind)

    async def check(self) -> None:
        """For `/health/ready` (advisory): raise `DependencyUnavailableError` while the store
        does not answer, saying that work waits."""
        if self._down_since is not None:
            seconds = self._clock() - self._down_since
            raise DependencyUnavailableError(
                f"waiting: cache unavailable for {seconds:.0f} s, work that needs a concurrency slot or "
                f"a rate-limit token waits for it ({self._error})"
            )
