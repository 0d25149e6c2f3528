"""Retention windows from settings: RETENTION_DAYS, each kind's own days, 0 for forever, and
executions kept at least as long as their Idempotency-Key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from agentrunner.node import retention_windows
from agentrunner.ports.retention import PurgeKind
from agentrunner.settings import Settings


# Any: Settings validates each value, as it does the environment's strings.
def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def test_every_kind_takes_retention_days_unless_it_has_its_own() -> None:
    windows = retention_windows(_settings(retention_days=10, retention_fires_days=0.5, idempotency_ttl_seconds=60))

    assert windows.of(PurgeKind.EXECUTIONS) == timedelta(days=10)
    assert windows.of(PurgeKind.PLAN_RUNS) == windows.of(PurgeKind.OUTBOX) == timedelta(days=10)
    assert windows.of(PurgeKind.FIRES) == timedelta(hours=12)
    assert windows.of(PurgeKind.DEAD_LETTERS) == windows.of(PurgeKind.WEBHOOK_DELIVERIES) == timedelta(days=10)
    assert windows.of(PurgeKind.IDEMPOTENCY_KEYS) == timedelta(seconds=60)


def test_zero_keeps_a_kind_forever_but_expired_idempotency_keys_still_go() -> None:
    windows = retention_windows(_settings(retention_days=0, retention_dead_letters_days=7))

    assert windows.of(PurgeKind.EXECUTIONS) is None
    assert windows.of(PurgeKind.FIRES) is None
    assert windows.of(PurgeKind.DEAD_LETTERS) == timedelta(days=7)
    assert windows.of(PurgeKind.IDEMPOTENCY_KEYS) == timedelta(days=1)


def test_executions_stay_while_a_retry_with_their_idempotency_key_may_come() -> None:
    windows = retention_windows(_settings(retention_days=0.001, idempotency_ttl_seconds=3600))

    assert windows.of(PurgeKind.EXECUTIONS) == timedelta(hours=1)
    assert windows.of(PurgeKind.FIRES) == timedelta(days=0.001)
