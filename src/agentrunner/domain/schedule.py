"""Schedules and their fires, with the pure rules of timing and policy.

Every function here takes the time as an argument (no clock, no I/O), so every scheduler
replica computes the same fire times and the rules are tested on a fake clock.

Timing. A cron schedule fires at the wall-clock times its 5-field expression matches in
its `timezone`: a time that does not exist (the hour skipped when clocks go forward)
fires as far past the jump as it was into the gap (02:30 -> 03:30, as Temporal's
"compatible" rule); a time that happens twice (clocks go back) fires once, at its first
occurrence. An interval schedule fires at `start_at + n * interval`
(n >= 0; without `start_at`, multiples of the interval since the Unix epoch, so replicas
agree without talking), each tick delayed by a deterministic jitter in [0, jitter).

Policies. A tick handled at most `misfire_grace_seconds` after its time fires as itself.
Later than that it was missed (no scheduler was up): `skip` drops missed ticks, `run_once`
runs them once (unless a tick on time runs anyway). When the previous run is still going,
`overlap_policy` decides: `skip` the tick, `allow` it to run alongside, or `queue_one`: hold
one tick until the previous run ends (and skip any other meanwhile).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentrunner.domain.agent import CronExpression, ScheduleConfig, TimeZoneName
from agentrunner.domain.execution import ExecutionError, ExecutionStatus, utcnow

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A cron expression that never matches within this many candidates (e.g. "0 0 30 2 *")
# has no next fire.
MAX_CRON_CANDIDATES = 1000


class MisfirePolicy(StrEnum):
    """What happens to ticks missed while no scheduler was running."""

    SKIP = "skip"
    RUN_ONCE = "run_once"


class OverlapPolicy(StrEnum):
    """What happens to a tick while the schedule's previous run is still going."""

    SKIP = "skip"
    ALLOW = "allow"
    QUEUE_ONE = "queue_one"


class ScheduleSource(StrEnum):
    """Where a schedule comes from: an agent file's `schedule_config`, or the API."""

    CONFIG = "config"
    API = "api"


class FireStatus(StrEnum):
    """What became of one tick."""

    FIRED = "fired"  # an execution was created
    PENDING = "pending"  # held (queue_one) until the previous run ends
    SKIPPED = "skipped"  # nothing ran: see the fire's note


def config_schedule_id(agent: str) -> str:
    """The id of the schedule an agent's `schedule_config` declares (stable across restarts)."""
    return f"config:{agent}"


class Schedule(BaseModel):
    """When an agent runs by itself, and with what input."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, max_length=64)
    agent: str = Field(min_length=1, max_length=128)
    cron: CronExpression | None = None
    interval_seconds: float | None = Field(default=None, gt=0)
    timezone: TimeZoneName = "UTC"
    start_at: datetime | None = None
    jitter_seconds: float = Field(default=0, ge=0)
    task_data: dict[str, Any] = Field(default_factory=dict)
    misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE
    misfire_grace_seconds: float = Field(default=60, gt=0)
    overlap_policy: OverlapPolicy = OverlapPolicy.SKIP
    timeout_seconds: float = Field(default=300, gt=0)
    paused: bool = False
    source: ScheduleSource = ScheduleSource.API
    # The tenant that created it through the API: who may act on it, and whose budgets
    # and limits its runs count against. None for agent files' schedules (admins' alone).
    tenant: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    # When the definition or the pause last changed: ticks before it are not owed.
    updated_at: datetime = Field(default_factory=utcnow)
    # The latest tick claimed (fired, held or skipped) by any replica.
    last_fire_at: datetime | None = None

    @model_validator(mode="after")
    def _one_timing(self) -> Schedule:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("a schedule needs exactly one of 'cron' or 'interval_seconds'")
        if self.jitter_seconds and (self.interval_seconds is None or self.jitter_seconds >= self.interval_seconds):
            raise ValueError("'jitter_seconds' applies to interval schedules and must be below 'interval_seconds'")
        for name in ("start_at", "created_at", "updated_at", "last_fire_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"'{name}' needs a timezone (e.g. 2026-01-01T09:00:00Z)")
        return self

    @property
    def kind(self) -> str:
        """`cron` or `interval`."""
        return "cron" if self.cron is not None else "interval"

    def same_definition(self, other: Schedule) -> bool:
        """True when `other` fires at the same times with the same input and policies."""
        ignored = {"paused", "created_at", "updated_at", "last_fire_at"}
        return self.model_dump(exclude=ignored) == other.model_dump(exclude=ignored)


def schedule_from_config(agent: str, config: ScheduleConfig, *, now: datetime) -> Schedule:
    """The schedule an agent file's `schedule_config` declares."""
    return Schedule(
        id=config_schedule_id(agent),
        agent=agent,
        cron=config.cron if config.type == "cron" else None,
        interval_seconds=config.interval_seconds if config.type == "interval" else None,
        timezone=config.timezone,
        start_at=config.start_at,
        jitter_seconds=config.jitter_seconds,
        task_data=config.task_data,
        misfire_policy=MisfirePolicy(config.misfire_policy),
        misfire_grace_seconds=config.misfire_grace_seconds,
        overlap_policy=OverlapPolicy(config.overlap_policy),
        timeout_seconds=config.timeout_seconds,
        source=ScheduleSource.CONFIG,
        created_at=now,
        updated_at=now,
    )


class ScheduleFire(BaseModel):
    """One tick of a schedule as a replica claimed it, and how its run went."""

    model_config = ConfigDict(frozen=True)

    id: str
    schedule_id: str
    agent: str
    fire_time: datetime  # when the tick was due
    fired_at: datetime  # when a scheduler acted on it
    status: FireStatus
    note: str | None = None
    execution_id: str | None = None
    # The run's outcome, read from its execution (None while there is none).
    outcome: ExecutionStatus | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: str | None = None
    error: ExecutionError | None = None


# -- timing --------------------------------------------------------------------------


def next_fire_after(schedule: Schedule, after: datetime) -> datetime | None:
    """The first fire time of `schedule` strictly after `after` (None: never again)."""
    if schedule.interval_seconds is not None:
        return _next_interval(schedule, after)
    assert schedule.cron is not None
    return _next_cron(schedule.cron, ZoneInfo(schedule.timezone), after)


def fires_between(schedule: Schedule, after: datetime, until: datetime, *, limit: int = 1000) -> list[datetime]:
    """Fire times in (after, until], oldest first, at most `limit` of them."""
    times: list[datetime] = []
    current = next_fire_after(schedule, after)
    while current is not None and current <= until and len(times) < limit:
        times.append(current)
        current = next_fire_after(schedule, current)
    return times


def _microseconds(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _next_interval(schedule: Schedule, after: datetime) -> datetime:
    assert schedule.interval_seconds is not None
    step = max(1, round(schedule.interval_seconds * 1_000_000))
    anchor = schedule.start_at or EPOCH
    elapsed = _microseconds(after - anchor)
    tick = max(0, elapsed // step)  # the tick at or before `after` (or the first)
    for index in (tick, tick + 1, tick + 2):
        when = anchor + timedelta(microseconds=index * step + _jitter(schedule, index))
        if when > after:
            return when
    raise AssertionError("unreachable: jitter is below the interval")


def _jitter(schedule: Schedule, tick: int) -> int:
    """A delay in [0, jitter) microseconds, the same for a tick on every replica."""
    if not schedule.jitter_seconds:
        return 0
    digest = hashlib.sha256(f"{schedule.id}\0{tick}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % max(1, round(schedule.jitter_seconds * 1_000_000))


def _next_cron(expression: str, zone: ZoneInfo, after: datetime) -> datetime | None:
    # croniter walks naive wall-clock times; each is placed in the zone here, so daylight
    # saving changes follow the rules in this module's docstring. Right after clocks went
    # forward, wall times of the skipped hour (now behind) still map to instants ahead.
    local = after.astimezone(zone).replace(tzinfo=None)
    skipped = _offset(zone, after) - _offset(zone, after - timedelta(hours=3))
    walker = croniter(expression, local - max(skipped, timedelta(0)))
    for _ in range(MAX_CRON_CANDIDATES):
        try:
            wall: datetime = walker.get_next(datetime)
        except CroniterBadDateError:  # a date that never comes, e.g. "0 0 30 2 *"
            return None
        # fold=0: the first of two occurrences; in a gap, the offset from before it, so
        # the time lands as far past the jump as it was into the gap.
        when = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if when > after:
            return when
    return None


def _offset(zone: ZoneInfo, when: datetime) -> timedelta:
    return when.astimezone(zone).utcoffset() or timedelta(0)


# -- policies ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DueTick:
    """A tick to claim, and whether it is a catch-up for ticks that were missed."""

    fire_time: datetime
    missed: int = 0  # how many missed ticks this one stands for (0: on time)


def due_ticks(schedule: Schedule, first: datetime, now: datetime, *, limit: int = 1000) -> list[DueTick]:
    """The ticks to claim when `first` is the oldest unclaimed tick and it is `now` (>= first),
    by the misfire policy: on-time ticks as they are; missed ones (over the grace) dropped
    (`skip`) or folded into one run (`run_once`, unless a tick on time runs anyway). Missed
    ticks are claimed as one (keyed by the first of them, `missed` > 0, counted up to
    `limit`), so a skip is recorded once too and every replica picks the same key."""
    grace_start = now - timedelta(seconds=schedule.misfire_grace_seconds)
    if first >= grace_start:
        return [DueTick(t) for t in [first, *fires_between(schedule, first, now, limit=limit - 1)]]
    on_time = fires_between(schedule, grace_start - timedelta(microseconds=1), now, limit=limit)
    if on_time and schedule.misfire_policy is MisfirePolicy.RUN_ONCE:
        return [DueTick(t) for t in on_time]
    missed = 1 + len(fires_between(schedule, first, grace_start - timedelta(microseconds=1), limit=limit - 1))
    return [DueTick(first, missed=missed), *(DueTick(t) for t in on_time)]


@dataclass(frozen=True, slots=True)
class Activity:
    """What a schedule has under way: a run not yet ended, a tick held for later."""

    running: bool = False
    pending: bool = False


def overlap_decision(schedule: Schedule, tick: DueTick, activity: Activity) -> tuple[FireStatus, str | None, Activity]:
    """What to do with `tick` given the schedule's `activity`: the fire status, a note
    saying why when it does not fire, and the activity after it."""
    if tick.missed and schedule.misfire_policy is MisfirePolicy.SKIP:
        return (
            FireStatus.SKIPPED,
            f"missed {tick.missed} tick(s) while no scheduler ran (misfire_policy skip)",
            activity,
        )
    note = f"runs once for {tick.missed} missed tick(s)" if tick.missed else None
    policy = schedule.overlap_policy
    if policy is OverlapPolicy.ALLOW or not (activity.running or activity.pending):
        return FireStatus.FIRED, note, Activity(running=True, pending=activity.pending)
    if policy is OverlapPolicy.QUEUE_ONE and not activity.pending:
        return FireStatus.PENDING, "held until the previous run ends (overlap_policy queue_one)", Activity(True, True)
    if activity.pending:  # the held tick runs next; this one is not owed
        return FireStatus.SKIPPED, "a tick is already held for when the previous run ends (queue_one)", activity
    return FireStatus.SKIPPED, f"previous run still going (overlap_policy {policy.value})", activity


def timed_out(fired_at: datetime, schedule_timeout_seconds: float, now: datetime) -> bool:
    """True when a run fired at `fired_at` has outlived its schedule's timeout."""
    return now - fired_at > timedelta(seconds=schedule_timeout_seconds)
