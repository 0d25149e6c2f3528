"""The overview's buckets (domain/stats.py): whole buckets aligned on the epoch, the last one
holding now, and nearest-rank percentiles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from agentrunner.domain.stats import bucket_edges, nearest_rank

NOW = datetime(2026, 12, 7, 10, 17, 42, 500000, tzinfo=UTC)
# Hypothesis bounds its datetimes with naive ones and adds the zone itself.
NAIVE_2000 = datetime(2000, 1, 1)  # noqa: DTZ001
NAIVE_2100 = datetime(2100, 1, 1)  # noqa: DTZ001


def test_buckets_are_aligned_and_the_last_holds_now() -> None:
    since, until, count = bucket_edges(NOW, 3600, 60)

    assert (since, until, count) == (
        datetime(2026, 12, 7, 9, 18, tzinfo=UTC),
        datetime(2026, 12, 7, 10, 18, tzinfo=UTC),
        60,
    )


def test_a_window_that_is_not_whole_buckets_is_rounded_up() -> None:
    since, until, count = bucket_edges(NOW, 3601, 3600)

    assert count == 2
    assert until - since == timedelta(hours=2)


@given(
    now=st.datetimes(min_value=NAIVE_2000, max_value=NAIVE_2100, timezones=st.just(UTC)),
    bucket=st.integers(min_value=60, max_value=86400),
    buckets=st.integers(min_value=1, max_value=1440),
)
def test_the_edges_always_hold_the_window_and_now(now: datetime, bucket: int, buckets: int) -> None:
    since, until, count = bucket_edges(now, bucket * buckets, bucket)

    assert count == buckets
    assert since <= now - timedelta(seconds=bucket * buckets) + timedelta(seconds=bucket)
    assert since <= now < until
    assert until.timestamp() % bucket == 0


def test_nearest_rank_is_the_smallest_value_at_or_above_the_share() -> None:
    assert [nearest_rank(n, 50) for n in (1, 2, 3, 10, 11)] == [1, 1, 2, 5, 6]
    assert [nearest_rank(n, 95) for n in (1, 2, 19, 20, 21, 100)] == [1, 2, 19, 19, 20, 95]
