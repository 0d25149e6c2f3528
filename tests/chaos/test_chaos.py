"""The chaos suite's short form: one `cluster up --autonomous 2` on private PostgreSQL, Redis
and RabbitMQ (tests/chaos/harness.py), invocations at a few a second from clients that
retry with their Idempotency-Key, and the faults that matter most, one per test: a worker's
kill -9, the orchestrator's kill -9, a Redis outage, a RabbitMQ restart (its private node
starts in about 4 s), a PostgreSQL restart. After each, every accepted execution succeeded
exactly once, no key ran twice, the `max_concurrency: 2` agent never ran three at once, and
client errors stayed within what the fault may cost.

The scheduler's and the collaborative pool's kill -9 run in the long campaign (bench/chaos.py)
only: they cost clients nothing by design, and the short form must fit `make test`'s time.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chaos.harness import LIMIT, Cluster, FaultReport, chaos_cluster, kill_role, outage, restart, run_fault, table

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

RATE = 4.0  # invocations a second
REDIS_OUTAGE_SECONDS = 10.0
PG_RESTART_SECONDS = 3.0  # down this long after a fast shutdown, as `systemctl restart` does


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with chaos_cluster(tmp_path_factory.mktemp("chaos")) as cluster:
        yield cluster


@pytest.fixture
def serving(cluster: Cluster) -> Cluster:
    """The cluster, started again if a previous fault made it exit."""
    cluster.ensure_up()
    return cluster


def _explain(report: FaultReport, cluster: Cluster) -> str:
    return f"\n{table([report])}\n{report}\n--- cluster log\n{cluster.log_tail()}"


def _assert_nothing_lost_or_doubled(report: FaultReport, cluster: Cluster) -> None:
    why = _explain(report, cluster)
    print(why)  # the figures, shown by -rP
    assert report.accepted > 0, why
    assert report.never_accepted == 0, why
    assert report.lost == 0, why
    assert report.succeeded == report.accepted, why
    assert report.duplicated == 0, why
    assert 1 <= report.limit_peak <= LIMIT, why
    assert report.recovery_seconds is not None, why


def test_a_worker_killed_costs_clients_nothing(serving: Cluster) -> None:
    report = run_fault(serving, "worker kill -9", kill_role("autonomous"), rate=RATE)

    _assert_nothing_lost_or_doubled(report, serving)
    assert report.client_errors == 0, _explain(report, serving)
    assert report.role_back_seconds is not None, _explain(report, serving)  # cluster up replaced it
    assert serving.alive(), _explain(report, serving)


def test_an_orchestrator_killed_costs_errors_only_while_it_restarts(serving: Cluster) -> None:
    report = run_fault(serving, "orchestrator kill -9", kill_role("orchestrator", errors_allowed=True), rate=RATE)

    _assert_nothing_lost_or_doubled(report, serving)
    assert report.role_back_seconds is not None, _explain(report, serving)
    assert report.errors_outside_window == 0, _explain(report, serving)


def test_invocations_and_limits_hold_through_a_redis_outage(serving: Cluster) -> None:
    report = run_fault(
        serving, f"redis outage {REDIS_OUTAGE_SECONDS:g} s", outage("redis", REDIS_OUTAGE_SECONDS), rate=RATE
    )

    _assert_nothing_lost_or_doubled(report, serving)  # the limit's peak among them


def test_a_rabbitmq_restart_loses_nothing(serving: Cluster) -> None:
    report = run_fault(serving, "rabbitmq restart", restart("rabbitmq", "graceful"), rate=RATE)

    _assert_nothing_lost_or_doubled(report, serving)
    assert report.errors_outside_window == 0, _explain(report, serving)


def test_a_postgresql_restart_answers_503_and_loses_nothing(serving: Cluster) -> None:
    report = run_fault(serving, "postgresql restart", outage("pg", PG_RESTART_SECONDS, "graceful"), rate=RATE)

    _assert_nothing_lost_or_doubled(report, serving)
    refused = {kind for kind in report.error_kinds if kind[:1].isdigit()}
    assert all(kind.startswith("503") for kind in refused), _explain(report, serving)
    assert set(report.readiness) <= {"200", "503"}, _explain(report, serving)
    assert report.errors_outside_window == 0, _explain(report, serving)
