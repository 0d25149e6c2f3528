"""How late the event loop runs: the lag of a timer that should wake every
`interval_seconds`, recorded on the `agentrunner_event_loop_lag_seconds` histogram.

A process's event loop serves every request, consumer and background task of its roles:
a call that blocks it (a file read, a TLS context built, a sync SDK call, a big parse)
delays all of them by as long. This task sees such a block as a wake-up that came late by
up to the block's length, whatever caused it, and warns when one is over `warn_seconds`.
The warnings are rate-limited: the first at once, later ones at most once per
`warn_every_seconds`, each counting the blocks seen since the last one and the worst of
them. It cannot say what blocked; asyncio's debug mode can (PYTHONASYNCIODEBUG=1 logs each
callback slower than 100 ms with its name)."""

from __future__ import annotations

import asyncio

from agentrunner.background import cancelled, forever
from agentrunner.logs import get_logger
from agentrunner.ports.metrics import Metrics

log = get_logger(__name__)

# 20 wake-ups a second cost ~0.05 % of a core; a block shows at nearly its full length
# (the timer was at most one interval from waking when the block began).
INTERVAL_SECONDS = 0.05
WARN_SECONDS = 0.5
WARN_EVERY_SECONDS = 60.0


class LoopLagMonitor:
    """Measures the event loop's lag while started.

    Contract: `start` runs the measuring task on the running loop, `stop` cancels it and
    waits for it; `max_lag_seconds` is the worst lag seen since start. Measuring never
    raises into the loop and records only through `Metrics` and the log."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        interval_seconds: float = INTERVAL_SECONDS,
        warn_seconds: float = WARN_SECONDS,
        warn_every_seconds: float = WARN_EVERY_SECONDS,
    ) -> None:
        self._metrics = metrics
        self._interval = interval_seconds
        self._warn = warn_seconds
        self._warn_every = warn_every_seconds
        self._task: asyncio.Task[None] | None = None
        self.max_lag_seconds = 0.0
        # Blocks over `warn_seconds` seen since the last warning, the worst of them, and when
        # (loop time) that warning was given.
        self._last_warning = -warn_every_seconds
        self._blocks, self._worst = 0, 0.0

    async def start(self) -> None:
        if self._task is None:
            self._last_warning = -self._warn_every
            self._blocks, self._worst = 0, 0.0
            self._task = forever(self._measure, task="event-loop-lag", metrics=self._metrics)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancelled(task)

    async def _measure(self) -> None:
        loop = asyncio.get_running_loop()
        asleep = loop.time()
        await asyncio.sleep(self._interval)
        now = loop.time()
        lag = max(now - asleep - self._interval, 0.0)
        self.max_lag_seconds = max(self.max_lag_seconds, lag)
        self._metrics.event_loop_lag(lag)
        if lag >= self._warn:
            self._blocks, self._worst = self._blocks + 1, max(self._worst, lag)
        if self._blocks and now - self._last_warning >= self._warn_every:
            log.warning(
                "event loop blocked: every request and task of this process waited",
                worst_seconds=round(self._worst, 3),
                times=self._blocks,
                hint="PYTHONASYNCIODEBUG=1 logs the callbacks slower than 100 ms",
            )
            self._last_warning, self._blocks, self._worst = now, 0, 0.0
