"""Schedule timing and policies on a fake clock: cron in a timezone across DST changes,
intervals with a start time and jitter, misfire and overlap decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentrunner.domain.agent import ScheduleConfig
from agentrunner.domain.schedule import (
    Activity,
    DueTick,
    FireStatus,
    MisfirePolicy,
    OverlapPolicy,
    Schedule,
    ScheduleSource,
    due_ticks,
    fires_between,
    next_fire_after,
    overlap_decision,
    schedule_from_config,
)

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
# hypothesis bounds are naive; `timezones=` makes the drawn values aware.
NAIVE_2000, NAIVE_2020, NAIVE_2030, NAIVE_2100 = (datetime(y, 1, 1) for y in (2000, 2020, 2030, 2100))  # noqa: DTZ001


def _schedule(**fields: Any) -> Schedule:
    return Schedule.model_validate({"id": "s", "agent": "a", **fields})


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def _local(zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone)


def test_cron_fires_at_the_wall_clock_time_of_its_timezone() -> None:
    daily = _schedule(cron="0 9 * * *", timezone="Europe/Paris")

    winter = next_fire_after(daily, _utc(2026, 1, 15, 12, 0))
    summer = next_fire_after(daily, _utc(2026, 7, 15, 12, 0))

    assert winter == _utc(2026, 1, 16, 8, 0)
    assert summer == _utc(2026, 7, 16, 7, 0)


def test_cron_is_strictly_after_the_given_time() -> None:
    hourly = _schedule(cron="0 * * * *")

    assert next_fire_after(hourly, _utc(2026, 5, 1, 10, 0)) == _utc(2026, 5, 1, 11, 0)
    assert next_fire_after(hourly, _utc(2026, 5, 1, 9, 59, 59)) == _utc(2026, 5, 1, 10, 0)


def test_a_time_skipped_by_spring_forward_fires_as_far_past_the_jump() -> None:
    at_0230 = _schedule(cron="30 2 * * *", timezone="Europe/Paris")

    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
    fires = fires_between(at_0230, _utc(2026, 3, 27, 12, 0), _utc(2026, 3, 31, 12, 0))

    local = [fire.astimezone(PARIS) for fire in fires]
    assert [(t.day, t.hour, t.minute) for t in local] == [(28, 2, 30), (29, 3, 30), (30, 2, 30), (31, 2, 30)]


def test_a_time_repeated_by_fall_back_fires_once_at_its_first_occurrence() -> None:
    at_0130 = _schedule(cron="30 1 * * *", timezone="America/New_York")

    # 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
    fires = fires_between(at_0130, _utc(2026, 10, 31, 12, 0), _utc(2026, 11, 2, 12, 0))

    assert fires == [_local(NEW_YORK, 2026, 11, 1, 1, 30).astimezone(UTC), _utc(2026, 11, 2, 6, 30)]
    assert fires[0] == _utc(2026, 11, 1, 5, 30), "the first 01:30 is EDT (UTC-4)"


def test_every_half_hour_across_spring_forward_neither_repeats_nor_goes_back() -> None:
    half_hourly = _schedule(cron="*/30 * * * *", timezone="Europe/Paris")

    fires = fires_between(half_hourly, _utc(2026, 3, 29, 0, 0), _utc(2026, 3, 29, 2, 0))

    local = [fire.astimezone(PARIS).strftime("%H:%M") for fire in fires]
    assert local == ["01:30", "03:00", "03:30", "04:00"]


def test_an_impossible_cron_never_fires() -> None:
    assert next_fire_after(_schedule(cron="0 0 30 2 *"), _utc(2026, 1, 1)) is None


def test_intervals_fall_on_multiples_since_the_epoch_so_replicas_agree() -> None:
    every_5m = _schedule(interval_seconds=300)

    assert next_fire_after(every_5m, _utc(2026, 5, 1, 10, 2, 17)) == _utc(2026, 5, 1, 10, 5)
    assert next_fire_after(every_5m, _utc(2026, 5, 1, 10, 5)) == _utc(2026, 5, 1, 10, 10)


def test_intervals_count_from_start_at_and_not_before_it() -> None:
    start = _utc(2026, 5, 1, 10, 0, 7)
    every_10s = _schedule(interval_seconds=10, start_at=start)

    assert next_fire_after(every_10s, _utc(2020, 1, 1)) == start
    assert next_fire_after(every_10s, start) == start + timedelta(seconds=10)
    assert next_fire_after(every_10s, _utc(2026, 5, 1, 11, 0, 0)) == _utc(2026, 5, 1, 11, 0, 7)


def test_fractional_intervals_do_not_drift() -> None:
    every_third = _schedule(interval_seconds=0.3)

    fires = fires_between(every_third, _utc(2026, 1, 1), _utc(2026, 1, 1, 0, 0, 30), limit=200)

    assert len(fires) == 100
    assert fires[-1] == _utc(2026, 1, 1, 0, 0, 30)


def test_jitter_is_deterministic_below_the_jitter_and_keeps_one_fire_per_interval() -> None:
    jittered = _schedule(interval_seconds=60, jitter_seconds=20)
    same_id = _schedule(interval_seconds=60, jitter_seconds=20)
    other_id = jittered.model_copy(update={"id": "other"})

    fires = fires_between(jittered, _utc(2026, 1, 1), _utc(2026, 1, 1, 1, 0))

    assert fires == fires_between(same_id, _utc(2026, 1, 1), _utc(2026, 1, 1, 1, 0))
    assert fires != fires_between(other_id, _utc(2026, 1, 1), _utc(2026, 1, 1, 1, 0))
    assert len(fires) == 60
    offsets = [(fire - _utc(2026, 1, 1)).total_seconds() % 60 for fire in fires]
    assert all(0 <= offset < 20 for offset in offsets)
    assert len(set(offsets)) > 50


@given(
    interval=st.floats(min_value=0.5, max_value=86_400),
    jitter_share=st.floats(min_value=0, max_value=0.99),
    after=st.datetimes(min_value=NAIVE_2000, max_value=NAIVE_2100, timezones=st.just(UTC)),
)
def test_the_next_interval_fire_is_after_and_within_one_interval_plus_jitter(
    interval: float, jitter_share: float, after: datetime
) -> None:
    schedule = _schedule(interval_seconds=interval, jitter_seconds=interval * jitter_share)

    fire = next_fire_after(schedule, after)

    assert fire is not None
    assert after < fire <= after + timedelta(seconds=interval * (1 + jitter_share) + 1e-5)
    assert next_fire_after(schedule, fire - timedelta(microseconds=1)) == fire


@given(
    cron=st.sampled_from(["*/7 * * * *", "0 */3 * * *", "15 2 * * *", "0 0 * * 1", "30 1 1 * *"]),
    zone=st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]),
    after=st.datetimes(min_value=NAIVE_2020, max_value=NAIVE_2030, timezones=st.just(UTC)),
)
def test_cron_fires_increase_and_match_the_expression_outside_gaps(cron: str, zone: str, after: datetime) -> None:
    schedule = _schedule(cron=cron, timezone=zone)

    fires = fires_between(schedule, after, after + timedelta(days=40), limit=5)

    assert fires
    assert all(a < b for a, b in zip([after, *fires], fires, strict=False))
    first_field = cron.split(maxsplit=1)[0]
    minute = int(first_field) if first_field.isdigit() else None
    if minute is not None:
        # A time in a 30-minute gap (Lord Howe) shifts by 30 minutes; every other keeps its minute.
        assert all(f.astimezone(ZoneInfo(zone)).minute in (minute, (minute + 30) % 60) for f in fires)


def test_on_time_ticks_fire_each_within_the_grace() -> None:
    every_second = _schedule(interval_seconds=1, misfire_grace_seconds=60)
    first = _utc(2026, 1, 1, 0, 0, 0)

    ticks = due_ticks(every_second, first, first + timedelta(seconds=2, milliseconds=10))

    assert ticks == [DueTick(first), DueTick(first + timedelta(seconds=1)), DueTick(first + timedelta(seconds=2))]


@pytest.mark.parametrize("policy", [MisfirePolicy.RUN_ONCE, MisfirePolicy.SKIP])
def test_ticks_missed_beyond_the_grace_are_claimed_as_one(policy: MisfirePolicy) -> None:
    hourly = _schedule(cron="0 * * * *", misfire_policy=policy, misfire_grace_seconds=300)
    first = _utc(2026, 1, 1, 0, 0)

    [tick] = due_ticks(hourly, first, _utc(2026, 1, 1, 5, 30))
    status, note, _ = overlap_decision(hourly, tick, Activity())

    assert tick == DueTick(first, missed=6)
    if policy is MisfirePolicy.RUN_ONCE:
        assert (status, note) == (FireStatus.FIRED, "runs once for 6 missed tick(s)")
    else:
        assert status is FireStatus.SKIPPED
        assert "missed 6" in str(note)


def test_run_once_drops_missed_ticks_when_a_tick_on_time_runs_anyway() -> None:
    every_minute = _schedule(interval_seconds=60, misfire_grace_seconds=90)
    first = _utc(2026, 1, 1, 0, 0)

    ticks = due_ticks(every_minute, first, _utc(2026, 1, 1, 0, 10, 5))

    assert ticks == [DueTick(_utc(2026, 1, 1, 0, 9)), DueTick(_utc(2026, 1, 1, 0, 10))]


def test_skip_records_missed_ticks_once_and_fires_the_ones_on_time() -> None:
    every_minute = _schedule(interval_seconds=60, misfire_grace_seconds=90, misfire_policy="skip")
    first = _utc(2026, 1, 1, 0, 0)

    ticks = due_ticks(every_minute, first, _utc(2026, 1, 1, 0, 10, 5))

    assert ticks == [DueTick(first, missed=9), DueTick(_utc(2026, 1, 1, 0, 9)), DueTick(_utc(2026, 1, 1, 0, 10))]


def test_a_tick_just_within_the_grace_is_on_time() -> None:
    daily = _schedule(cron="0 9 * * *", misfire_grace_seconds=60, misfire_policy="skip")
    nine = _utc(2026, 1, 1, 9, 0)

    assert due_ticks(daily, nine, nine + timedelta(seconds=60)) == [DueTick(nine)]
    assert due_ticks(daily, nine, nine + timedelta(seconds=61)) == [DueTick(nine, missed=1)]


@pytest.mark.parametrize(
    ("policy", "activity", "expected"),
    [
        (OverlapPolicy.SKIP, Activity(), FireStatus.FIRED),
        (OverlapPolicy.SKIP, Activity(running=True), FireStatus.SKIPPED),
        (OverlapPolicy.ALLOW, Activity(running=True), FireStatus.FIRED),
        (OverlapPolicy.QUEUE_ONE, Activity(running=True), FireStatus.PENDING),
        (OverlapPolicy.QUEUE_ONE, Activity(running=True, pending=True), FireStatus.SKIPPED),
        (OverlapPolicy.QUEUE_ONE, Activity(pending=True), FireStatus.SKIPPED),
    ],
)
def test_overlap_policies(policy: OverlapPolicy, activity: Activity, expected: FireStatus) -> None:
    schedule = _schedule(interval_seconds=1, overlap_policy=policy)

    status, note, _ = overlap_decision(schedule, DueTick(_utc(2026, 1, 1)), activity)

    assert status is expected
    assert (note is None) == (status is FireStatus.FIRED)


def test_a_batch_of_ticks_sees_the_run_its_first_tick_started() -> None:
    queue_one = _schedule(interval_seconds=1, overlap_policy="queue_one")
    activity = Activity()
    statuses = []
    for second in range(4):
        status, _, activity = overlap_decision(queue_one, DueTick(_utc(2026, 1, 1, 0, 0, second)), activity)
        statuses.append(status)

    assert statuses == [FireStatus.FIRED, FireStatus.PENDING, FireStatus.SKIPPED, FireStatus.SKIPPED]


def test_schedule_config_of_the_seed_becomes_a_schedule_with_the_issue_defaults() -> None:
    config = ScheduleConfig.model_validate(
        {"type": "interval", "interval_seconds": 300, "task_data": {"checks": ["db"]}, "timeout_seconds": 120}
    )

    schedule = schedule_from_config("health-monitor", config, now=_utc(2026, 1, 1))

    assert schedule.id == "config:health-monitor"
    assert schedule.source is ScheduleSource.CONFIG
    assert (schedule.interval_seconds, schedule.cron, schedule.timeout_seconds) == (300, None, 120)
    assert schedule.misfire_policy is MisfirePolicy.RUN_ONCE
    assert schedule.overlap_policy is OverlapPolicy.SKIP


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"cron": "0 9 * * *", "interval_seconds": 5},
        {"cron": "0 9 * *"},
        {"cron": "0 9 * * *", "timezone": "Mars/Olympus"},
        {"interval_seconds": 5, "jitter_seconds": 5},
        {"cron": "0 9 * * *", "jitter_seconds": 1},
        {"interval_seconds": 5, "start_at": datetime(2026, 1, 1)},  # noqa: DTZ001 - naive on purpose
    ],
)
def test_invalid_schedules_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"."):
        _schedule(**fields)
