"""The scheduler: fires every schedule on time, once per tick across replicas.

Each replica keeps the next tick of every schedule in a heap and sleeps until the earliest
one (10,000 idle schedules cost nothing between fires). Every replica computes the same
ticks (`domain.schedule` is pure); claiming a tick inserts its unique (schedule, time) fire
row together with the execution and the `invoke.<agent>` and `scheduled.tasks` events, in
one transaction, so exactly one replica fires it and nothing it accepted is lost. The heap
is rebuilt from the store at start, after a change through this replica, on config reload,
and when the store's schedules version moves (another replica's API edit), checked every
`refresh_seconds`.

Ownership (ARCHITECTURE §10): a schedule made through the API records the tenant that made
it; its runs carry that tenant (on the execution, and in the invocation and the
`scheduled.tasks` announcement) so they count against its budgets and limits. A tenant acts
on its own schedules only; schedules from agent files belong to no tenant: only an admin
(or anyone with auth off) sees and acts on them. Another's is answered as a missing one.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from agentrunner.background import forever
from agentrunner.domain.errors import AgentRunnerError, ConflictError, ScheduleNotFoundError
from agentrunner.domain.event import Event, new_id
from agentrunner.domain.execution import Execution, utcnow
from agentrunner.domain.schedule import (
    Activity,
    DueTick,
    FireStatus,
    OverlapPolicy,
    Schedule,
    ScheduleFire,
    ScheduleSource,
    due_ticks,
    next_fire_after,
    overlap_decision,
    schedule_from_config,
)
from agentrunner.logs import get_logger
from agentrunner.ports.metrics import Metrics
from agentrunner.ports.state import FireClaim, ScheduleStore
from agentrunner.runtime.outbox import OutboxRelay
from agentrunner.runtime.ownership import owned
from agentrunner.runtime.pinned_configs import pinned_to
from agentrunner.runtime.registry import AgentRegistry
from agentrunner.runtime.topics import SCHEDULED_TASKS, TENANT_HEADER, invoke_topic
from agentrunner.tracing import current_tenant, new_trace_id, visible_tenant

log = get_logger(__name__)

Clock = Callable[[], datetime]


def fire_claim(
    schedule: Schedule,
    fire_time: datetime,
    status: FireStatus,
    note: str | None,
    now: datetime,
    agent_version: int | None = None,
) -> FireClaim:
    """The claim of one tick: with a queued execution (on `agent_version` of its agent) and
    its events when it runs."""
    fire = ScheduleFire(
        id=new_id(),
        schedule_id=schedule.id,
        agent=schedule.agent,
        fire_time=fire_time,
        fired_at=now,
        status=status,
        note=note,
    )
    if status is not FireStatus.FIRED:
        return FireClaim(fire=fire)
    execution, events = scheduled_run(schedule, fire_time, now, agent_version)
    return FireClaim(
        fire=fire.model_copy(update={"execution_id": execution.execution_id}), execution=execution, events=events
    )


def scheduled_run(
    schedule: Schedule, fire_time: datetime, now: datetime, agent_version: int | None = None
) -> tuple[Execution, list[Event]]:
    """A queued execution of the schedule's agent on its task_data, the event the agent's
    pool runs it from, and the `scheduled.tasks` announcement; all of the schedule's tenant
    (its creator), whose budgets and limits the run counts against."""
    tenant = schedule.tenant
    execution = Execution(
        execution_id=new_id(),
        agent=schedule.agent,
        input=schedule.task_data,
        schedule_id=schedule.id,
        trace_id=new_trace_id(),
        created_at=now,
        tenant=tenant,
        agent_version=agent_version,
    )
    headers = {TENANT_HEADER: tenant} if tenant else {}
    events = [
        Event(
            topic=invoke_topic(schedule.agent),
            payload={"execution_id": execution.execution_id, "stream": False}
            | ({"tenant": tenant} if tenant else {})
            | pinned_to(execution),
            trace_id=execution.trace_id,
            headers=headers,
        ),
        Event(
            topic=SCHEDULED_TASKS,
            payload={
                "agent": schedule.agent,
                "schedule_id": schedule.id,
                "scheduled_time": fire_time.isoformat(),
                "fired_at": now.isoformat(),
                "task_data": schedule.task_data,
                "execution_id": execution.execution_id,
            },
            trace_id=execution.trace_id,
            headers=headers,
        ),
    ]
    return execution, events


class Scheduler:
    """The scheduler loop of one replica (see the module docstring)."""

    def __init__(
        self,
        *,
        store: ScheduleStore,
        relay: OutboxRelay,
        registry: AgentRegistry,
        refresh_seconds: float = 2.0,
        clock: Clock = utcnow,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._store = store
        self._relay = relay
        self._registry = registry
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._schedules: dict[str, Schedule] = {}
        self._next: dict[str, datetime] = {}
        self._heap: list[tuple[datetime, str]] = []
        self._version: str | None = None
        self._reload = True
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._refresh_at = 0.0  # monotonic: when the schedules are read again at the latest

    @property
    def store(self) -> ScheduleStore:
        """Where schedules and fires are kept."""
        return self._store

    @property
    def registry(self) -> AgentRegistry:
        """The agents schedules may name."""
        return self._registry

    async def start(self) -> None:
        """Record the agent files' schedules, then run the loop in the background."""
        await self.sync_config()
        self._refresh_at = 0.0
        self._loop = forever(self._pass, task="scheduler-loop", metrics=self._metrics)

    async def stop(self) -> None:
        """Stop firing; events already claimed are delivered by the relay's `stop` (or left
        to the outbox sweep)."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    async def sync_config(self) -> None:
        """Make the schedules from agent files match the registry's `schedule_config`s."""
        now = self._clock()
        schedules = [
            schedule_from_config(agent.name, agent.config.schedule_config, now=now)
            for agent in self._registry.agents.values()
            if agent.config is not None and agent.config.schedule_config is not None
        ]
        await self._store.sync_config_schedules(schedules)
        self.changed()

    def changed(self) -> None:
        """Reload schedules from the store now (one was added, changed or removed)."""
        self._reload = True
        self._wake.set()

    def next_fire(self, schedule: Schedule, now: datetime | None = None) -> datetime | None:
        """When `schedule` fires next (None when paused or never again)."""
        if schedule.paused:
            return None
        return next_fire_after(schedule, now or self._clock())

    # -- the loop --------------------------------------------------------------------

    async def _pass(self) -> None:
        """Fire what is due, then sleep until the next tick or refresh."""
        try:
            if self._reload or time.monotonic() >= self._refresh_at:
                self._refresh_at = time.monotonic() + self._refresh_seconds
                await self._refresh()
            now = self._clock()
            due = self._pop_due(now)
            if due:
                await self._fire(due, now)
        except AgentRunnerError as exc:
            log.error("scheduler pass failed, trying again", error=exc.message)
            await asyncio.sleep(min(1.0, self._refresh_seconds))
            self._reload = True
            return
        except Exception:
            # Ticks popped from the heap may not have fired: the next pass rebuilds it from
            # the store, as after a store error (the supervisor logs and counts this one).
            self._reload = True
            raise
        await self._sleep(self._refresh_at)

    async def _sleep(self, refresh_at: float) -> None:
        delay = refresh_at - time.monotonic()
        if self._heap:
            delay = min(delay, (self._heap[0][0] - self._clock()).total_seconds())
        if delay <= 0:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def _refresh(self) -> None:
        version = await self._store.schedules_version()
        if version == self._version and not self._reload:
            return
        self._reload = False
        schedules = {s.id: s for s in await self._store.list_schedules() if not s.paused}
        for schedule_id, schedule in schedules.items():
            known = self._schedules.get(schedule_id)
            if known is None or known.updated_at != schedule.updated_at or schedule_id not in self._next:
                owed_from = max(schedule.updated_at, schedule.last_fire_at or schedule.updated_at)
                first = next_fire_after(schedule, owed_from)
                if first is None:
                    self._next.pop(schedule_id, None)
                else:
                    self._next[schedule_id] = first
        for gone in set(self._next) - set(schedules):
            del self._next[gone]
        self._schedules = schedules
        self._heap = [(when, schedule_id) for schedule_id, when in self._next.items()]
        heapq.heapify(self._heap)
        self._version = version

    def _pop_due(self, now: datetime) -> list[tuple[Schedule, datetime]]:
        due = []
        while self._heap and self._heap[0][0] <= now:
            when, schedule_id = heapq.heappop(self._heap)
            if self._next.get(schedule_id) == when:  # else a stale entry: the schedule changed
                due.append((self._schedules[schedule_id], when))
        return due

    async def _fire(self, due: Sequence[tuple[Schedule, datetime]], now: datetime) -> None:
        guarded = [s.id for s, _ in due if s.overlap_policy is not OverlapPolicy.ALLOW]
        try:
            activity = await self._store.schedule_activity(guarded)
            claims = [
                claim
                for schedule, first in due
                for claim in self._claims(schedule, due_ticks(schedule, first, now), activity, now)
            ]
            won = await self._store.claim_fires(claims)
        except AgentRunnerError:
            for schedule, first in due:  # nothing was claimed: try these ticks again
                heapq.heappush(self._heap, (first, schedule.id))
            raise
        for schedule, _ in due:
            upcoming = next_fire_after(schedule, now)
            if upcoming is None:
                self._next.pop(schedule.id, None)
            else:
                self._next[schedule.id] = upcoming
                heapq.heappush(self._heap, (upcoming, schedule.id))
        self._announce(won, claims, now)

    def _claims(
        self, schedule: Schedule, ticks: list[DueTick], activity: dict[str, Activity], now: datetime
    ) -> list[FireClaim]:
        unavailable = self._unavailable(schedule.agent)
        current = activity.get(schedule.id, Activity())
        claims = []
        for tick in ticks:
            note: str | None
            if unavailable:
                status, note = FireStatus.SKIPPED, unavailable
            else:
                status, note, current = overlap_decision(schedule, tick, current)
            version = self._registry.version_of(schedule.agent)
            claims.append(fire_claim(schedule, tick.fire_time, status, note, now, version))
        return claims

    def _unavailable(self, agent: str) -> str | None:
        registered = self._registry.agents.get(agent)
        if registered is None:
            return f"agent {agent!r} is not loaded on this scheduler"
        if not registered.status.runs:
            return f"agent {agent!r} is unavailable: {'; '.join(registered.reasons)}"
        return None

    def _announce(self, won: list[ScheduleFire], claims: list[FireClaim], now: datetime) -> None:
        if not won:
            return
        won_ids = {fire.id for fire in won}
        events = [event for claim in claims if claim.fire.id in won_ids for event in claim.events]
        fired = sum(fire.status is FireStatus.FIRED for fire in won)
        if self._metrics is not None:
            for fire in won:
                if fire.status is FireStatus.FIRED:
                    self._metrics.schedule_fired((now - fire.fire_time).total_seconds())
        lateness = max((now - fire.fire_time).total_seconds() for fire in won)
        log.info("schedules fired", fired=fired, claimed=len(won), max_lateness_ms=round(lateness * 1000, 1))
        if events:
            self.deliver(events)

    def deliver(self, events: list[Event]) -> None:
        """Publish committed outbox events in the background (the loop does not wait)."""
        self._relay.deliver_soon(events)

    # -- operations of the API -------------------------------------------------------

    async def create(self, schedule: Schedule) -> Schedule:
        """Store an ad-hoc schedule for a known agent, owned by the caller's tenant (raises
        `AgentNotFoundError`, `ConflictError` for a taken id)."""
        self._registry.get(schedule.agent)
        created = await self._store.create_schedule(
            schedule.model_copy(update={"source": ScheduleSource.API, "tenant": current_tenant()})
        )
        self.changed()
        return created

    async def get(self, schedule_id: str) -> Schedule:
        """The caller's schedule (raises `ScheduleNotFoundError`, also for another tenant's
        and, for a tenant, one from an agent file)."""
        schedule = await self._store.get_schedule(schedule_id)
        return owned(schedule, schedule.tenant, lambda: _no_schedule(schedule_id))

    async def schedules(self, *, agent: str | None = None) -> list[Schedule]:
        """The caller's schedules (of `agent`), by id."""
        return await self._store.list_schedules(agent=agent, tenant=visible_tenant())

    async def fires(self, schedule_id: str, *, limit: int = 50, before: datetime | None = None) -> list[ScheduleFire]:
        """Fires of the caller's schedule, newest first (raises `ScheduleNotFoundError`)."""
        await self.get(schedule_id)
        return await self._store.list_fires(schedule_id, limit=limit, before=before)

    async def delete(self, schedule_id: str) -> None:
        """Delete an ad-hoc schedule; one from an agent file is refused (`ConflictError`)."""
        schedule = await self.get(schedule_id)
        if schedule.source is ScheduleSource.CONFIG:
            raise ConflictError(
                f"schedule {schedule_id!r} comes from agent {schedule.agent!r}'s schedule_config: remove it "
                f"from the agent file, or pause it (POST /schedules/{schedule_id}/pause)",
                schedule_id=schedule_id,
            )
        await self._store.delete_schedule(schedule_id)
        self.changed()

    async def set_paused(self, schedule_id: str, paused: bool) -> Schedule:
        """Pause or resume; ticks while paused are not owed after a resume."""
        await self.get(schedule_id)
        schedule = await self._store.set_schedule_paused(schedule_id, paused)
        self.changed()
        return schedule

    async def trigger(self, schedule_id: str) -> ScheduleFire:
        """Run the schedule's agent now, whatever its pause and overlap policy (raises
        `ScheduleNotFoundError`, `AgentNotFoundError`, `AgentUnavailableError`)."""
        schedule = await self.get(schedule_id)
        self._registry.runnable(schedule.agent)
        now = self._clock()
        version = self._registry.version_of(schedule.agent)
        claim = fire_claim(schedule, now, FireStatus.FIRED, "triggered through the API", now, version)
        won = await self._store.claim_fires([claim])
        if not won:
            raise ConflictError(f"schedule {schedule_id!r} fired at this very instant: try again")
        self.deliver(list(claim.events))
        log.info("schedule triggered", schedule_id=schedule_id, execution_id=claim.fire.execution_id)
        return won[0]


def _no_schedule(schedule_id: str) -> ScheduleNotFoundError:
    return ScheduleNotFoundError(f"schedule {schedule_id!r} not found: GET /schedules lists them")
