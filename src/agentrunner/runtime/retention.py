"""Retention: deletes what has ended and is older than its window, so the database stops
growing with every execution.

Every `interval_seconds` one pass walks the kinds of `PurgeKind`, each in batches of
`batch_size` rows, one short transaction per batch, until a batch comes back short: a
writer waits at most one batch, and only on the rows being deleted, which no writer
touches (they have ended). Nothing that has not ended goes, whatever its age: a queued or
running execution, a plan run waiting for a human, a held tick, a webhook still retrying.
An execution's tokens and cost move to the usage rollup in the transaction that deletes
it, so `/usage` and the budgets keep their totals.

One purger at a time per deployment: a pass runs only under the store's purge lease (a
PostgreSQL advisory lock), and a replica that does not get it skips the pass. Were two to
run anyway, their batches take disjoint rows (`FOR UPDATE SKIP LOCKED`). A failed pass is
logged and the next one starts over: nothing a pass did is lost, nothing is done twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from agentrunner.background import cancelled, every
from agentrunner.domain.errors import AgentRunnerError
from agentrunner.domain.execution import utcnow
from agentrunner.logs import get_logger
from agentrunner.ports.metrics import Metrics
from agentrunner.ports.retention import PurgeKind, Retention

log = get_logger(__name__)

# Plan runs and published outbox events are parts of their executions' record: their window.
_WINDOW_OF = {
    PurgeKind.PLAN_RUNS: PurgeKind.EXECUTIONS,
    PurgeKind.OUTBOX: PurgeKind.EXECUTIONS,
    PurgeKind.EVAL_RUNS: PurgeKind.EXECUTIONS,
}


@dataclass(frozen=True, kw_only=True)
class RetentionWindows:
    """How long each kind is kept after it was created (None: forever)."""

    executions: timedelta | None
    fires: timedelta | None
    dead_letters: timedelta | None
    webhook_deliveries: timedelta | None
    # Always purged: past IDEMPOTENCY_TTL_SECONDS no retry can use them.
    idempotency_keys: timedelta

    def of(self, kind: PurgeKind) -> timedelta | None:
        """The window of `kind` (plan runs and the outbox follow the executions')."""
        window: timedelta | None = getattr(self, _WINDOW_OF.get(kind, kind).value)
        return window


@dataclass
class PurgeReport:
    """What one pass did: the rows each transaction deleted, per kind."""

    held: bool  # False: another process held the lease, nothing was done
    batches: dict[PurgeKind, list[int]] = field(default_factory=dict)

    @property
    def deleted(self) -> dict[PurgeKind, int]:
        """Rows deleted per kind (kinds with none left out)."""
        return {kind: sum(counts) for kind, counts in self.batches.items() if sum(counts)}


class RetentionPurger:
    """Runs a purge pass every `interval_seconds` in the background (see the module docstring)."""

    def __init__(
        self,
        *,
        retention: Retention,
        windows: RetentionWindows,
        interval_seconds: float = 3600.0,
        batch_size: int = 500,
        clock: Callable[[], datetime] = utcnow,
        metrics: Metrics | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._retention = retention
        self._windows = windows
        self._interval = interval_seconds
        self._batch_size = batch_size
        self._clock = clock
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start purging in the background; the first pass runs at once."""
        self._task = every(
            self._interval, self._purge_logged, task="retention-purge", metrics=self._metrics, at_once=True
        )

    async def stop(self) -> None:
        """Stop purging (a batch in flight is rolled back by its transaction's end)."""
        await cancelled(self._task)
        self._task = None

    async def purge_once(self) -> PurgeReport:
        """One pass over every kind with a window, if this process gets the purge lease.

        Raises what the store raises (`DependencyUnavailableError` when the database is not
        answering); what earlier batches deleted stays deleted."""
        now = self._clock()
        async with self._retention.purge_lease() as held:
            report = PurgeReport(held=held)
            if not held:
                return report
            for kind in PurgeKind:
                window = self._windows.of(kind)
                if window is not None:
                    report.batches[kind] = await self._purge_kind(kind, now - window)
        return report

    async def _purge_kind(self, kind: PurgeKind, before: datetime) -> list[int]:
        counts: list[int] = []
        while True:
            deleted = await self._retention.purge(kind, before=before, limit=self._batch_size)
            counts.append(deleted)
            if deleted < self._batch_size:
                return counts

    async def _purge_logged(self) -> None:
        started = time.perf_counter()
        try:
            report = await self.purge_once()
        except AgentRunnerError:  # the store not answering: said once per pass, the next tries again
            log.exception("retention purge failed; the next pass tries again", every_seconds=self._interval)
            return
        # Anything else goes to the supervisor (logged, counted); the next pass tries again too.
        if report.deleted:
            log.info(
                "retention purge",
                deleted={kind.value: n for kind, n in report.deleted.items()},
                transactions=sum(len(counts) for counts in report.batches.values()),
                ms=round((time.perf_counter() - started) * 1000, 1),
            )
        elif not report.held:
            log.debug("retention purge skipped: another replica holds the lease")
