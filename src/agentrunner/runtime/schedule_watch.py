"""The scheduler's watch over runs it started: held ticks (`overlap_policy: queue_one`) run
when the previous run ends, and runs that outlive their schedule's `timeout_seconds` are
stopped and recorded `timed_out`.

A queued run past its timeout is marked timed_out at once (a conditional write: a worker
that starts it meanwhile wins, and the next pass stops it). A running one is stopped by
the cancel request its worker already obeys; the worker records it cancelled, and this
watch then rewrites it to timed_out (again conditionally). Every replica watches: the
conditional writes make their actions count once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

from agentrunner.background import cancelled, every
from agentrunner.domain.errors import AgentRunnerError, ConflictError
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionError, ExecutionStatus, utcnow
from agentrunner.domain.schedule import timed_out
from agentrunner.logs import get_logger
from agentrunner.ports.bus import EventBus
from agentrunner.ports.metrics import Metrics
from agentrunner.ports.state import ExecutionStore, ScheduleStore, UnfinishedFire
from agentrunner.runtime.scheduler import scheduled_run
from agentrunner.runtime.topics import cancel_topic, finished_topic
from agentrunner.tracing import traced

log = get_logger(__name__)

TIMED_OUT = "timed_out"
# How long a run asked to stop may take before it is recorded timed_out anyway (its
# worker is gone or does not answer).
STOP_GRACE_SECONDS = 30.0


class FireWatch:
    """Checks unfinished scheduled runs every `interval_seconds` (see the module docstring)."""

    def __init__(
        self,
        *,
        executions: ExecutionStore,
        schedules: ScheduleStore,
        bus: EventBus,
        deliver: Callable[[list[Event]], None],
        interval_seconds: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
        metrics: Metrics | None = None,
        version_of: Callable[[str], int | None] | None = None,
    ) -> None:
        # The version of an agent loaded now: a held tick released runs on it (issue 24).
        self._version_of = version_of or (lambda agent: None)
        self._executions = executions
        self._schedules = schedules
        self._metrics = metrics
        self._bus = bus
        self._deliver = deliver
        self._interval = interval_seconds
        self._clock = clock
        # Runs this replica asked to stop, when, and why: rewritten to timed_out once stopped.
        self._stopping: dict[str, tuple[float, str]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start watching in the background."""
        self._task = every(self._interval, self._check_logged, task="scheduler-watch", metrics=self._metrics)

    async def stop(self) -> None:
        """Stop watching."""
        await cancelled(self._task)
        self._task = None

    async def check(self) -> None:
        """One pass: release held ticks whose schedule is idle, stop runs past their timeout."""
        unfinished = await self._schedules.unfinished_fires()
        busy = {u.fire.schedule_id for u in unfinished if u.fire.execution_id is not None}
        now = self._clock()
        for item in unfinished:
            if item.fire.execution_id is None:
                if item.fire.schedule_id not in busy:
                    await self._release(item)
                    busy.add(item.fire.schedule_id)
            elif timed_out(item.fire.fired_at, item.timeout_seconds, now):
                await self._time_out(await self._executions.get_execution(item.fire.execution_id), item)
        await self._settle_stopped()

    async def _release(self, item: UnfinishedFire) -> None:
        schedule = await self._schedules.get_schedule(item.fire.schedule_id)
        version = self._version_of(schedule.agent)
        execution, events = scheduled_run(schedule, item.fire.fire_time, self._clock(), version)
        if await self._schedules.release_fire(item.fire.id, execution, events):
            log.info("held tick released", schedule_id=schedule.id, execution_id=execution.execution_id)
            self._deliver(events)

    async def _time_out(self, execution: Execution, item: UnfinishedFire) -> None:
        message = (
            f"scheduled run of agent {execution.agent!r} (schedule {item.fire.schedule_id!r}) did not finish "
            f"within {item.timeout_seconds:g} s (timeout_seconds)"
        )
        if execution.status.is_terminal:
            return  # it ended since the pass began
        if execution.status in (ExecutionStatus.QUEUED, ExecutionStatus.WAITING_APPROVAL):  # no worker holds it
            await self._record_timed_out(execution, message, frozenset({execution.status}))
        elif execution.execution_id not in self._stopping:
            self._stopping[execution.execution_id] = (time.monotonic(), message)
            with traced(execution.trace_id, "scheduler"):
                log.error(message, execution_id=execution.execution_id, schedule_id=item.fire.schedule_id)
            await self._bus.publish(
                Event(
                    topic=cancel_topic(execution.agent),
                    payload={"execution_id": execution.execution_id, "reason": TIMED_OUT, "message": message},
                    trace_id=execution.trace_id,
                )
            )

    async def _settle_stopped(self) -> None:
        for execution_id, (asked, message) in list(self._stopping.items()):
            execution = await self._executions.get_execution(execution_id)
            if execution.status is ExecutionStatus.CANCELLED:
                await self._record_timed_out(execution, message, frozenset({ExecutionStatus.CANCELLED}))
            elif execution.status is ExecutionStatus.RUNNING and time.monotonic() - asked > STOP_GRACE_SECONDS:
                late = f"{message}; its worker did not stop it within {STOP_GRACE_SECONDS:g} s"
                await self._record_timed_out(execution, late, frozenset({ExecutionStatus.RUNNING}))
            elif execution.status is not ExecutionStatus.RUNNING:
                self._stopping.pop(execution_id, None)  # it ended by itself meanwhile

    async def _record_timed_out(self, execution: Execution, message: str, only_if: frozenset[ExecutionStatus]) -> None:
        ended = execution.model_copy(
            update={
                "status": ExecutionStatus.TIMED_OUT,
                "finished_at": execution.finished_at or utcnow(),
                "error": ExecutionError(code=TIMED_OUT, message=message),
            }
        )
        finished = Event(
            topic=finished_topic(execution.agent),
            payload={"execution_id": execution.execution_id, "status": ExecutionStatus.TIMED_OUT.value},
            trace_id=execution.trace_id,
        )
        try:
            await self._executions.save_execution(ended, events=[finished], only_if=only_if)
        except ConflictError:
            return  # another replica, or the worker, moved it first; the next pass looks again
        self._stopping.pop(execution.execution_id, None)
        with traced(execution.trace_id, "scheduler"):
            log.error("scheduled run timed out", execution_id=execution.execution_id, agent=execution.agent)
        self._deliver([finished])

    async def _check_logged(self) -> None:
        try:
            await self.check()
        except AgentRunnerError as exc:
            log.error("scheduler watch failed, trying again", error=exc.message)
