"""The retention port: deleting records past their window."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class PurgeKind(StrEnum):
    """What the retention purge deletes, each kind only once it has ended (runtime/retention.py)."""

    EXECUTIONS = "executions"  # terminal ones, their tool calls and journal of steps too; usage rolled up first
    PLAN_RUNS = "plan_runs"  # ended runs with their steps and clarifications (the executions' window)
    OUTBOX = "outbox"  # events already published (the executions' window)
    FIRES = "fires"  # ticks that fired or were skipped; held ones (pending) are kept
    DEAD_LETTERS = "dead_letters"  # replayed or not: the window is the operator's time to look
    WEBHOOK_DELIVERIES = "webhook_deliveries"  # delivered or given up; ones still retrying are kept
    EVAL_RUNS = "eval_runs"  # ended runs of eval suites (the executions' window: their cases go then)
    IDEMPOTENCY_KEYS = "idempotency_keys"  # past IDEMPOTENCY_TTL_SECONDS: no retry can use them


class Retention(Protocol):
    """Deletes records past their retention window, a small batch at a time.

    Contract: `purge` deletes only records of `kind` that have ended (see `PurgeKind`) and
    are older than `before`, at most `limit` of them, in one short transaction, and returns
    how many; two purgers at once never delete a row twice nor wait on each other's rows.
    An execution's usage moves to the usage rollup in the transaction that deletes it, so
    `ExecutionQueries.usage` counts it exactly once, before and after. Raises
    `DependencyUnavailableError` when the database is not answering.
    """

    def purge_lease(self) -> AbstractAsyncContextManager[bool]:
        """Enter: True when this process is the one purger of the deployment until exit
        (PostgreSQL: a session advisory lock, freed if the process dies), False when another
        process holds it."""
        ...

    async def purge(self, kind: PurgeKind, *, before: datetime, limit: int) -> int:
        """Delete at most `limit` ended records of `kind` older than `before`; how many were."""
        ...
