"""Budget periods are UTC days and months."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from agentrunner.runtime.budgets import period_bounds


def test_a_day_runs_from_utc_midnight_to_the_next() -> None:
    start, end = period_bounds(datetime(2026, 11, 24, 23, 59, tzinfo=UTC), "day")

    assert (start, end) == (datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC))


def test_a_month_runs_from_the_first_to_the_next_first_also_across_a_year() -> None:
    assert period_bounds(datetime(2026, 12, 31, 12, tzinfo=UTC), "month") == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert period_bounds(datetime(2027, 2, 10, tzinfo=UTC), "month")[1] == datetime(2027, 3, 1, tzinfo=UTC)


def test_a_local_time_is_counted_in_utc() -> None:
    tokyo = timezone(timedelta(hours=9))

    start, _ = period_bounds(datetime(2026, 11, 25, 3, 0, tzinfo=tokyo), "day")  # 18:00 UTC the day before

    assert start == datetime(2026, 11, 24, tzinfo=UTC)
