"""The backlog port (`ports.backlog.Backlog`) on SQLite and PostgreSQL: queued executions
and since when the oldest waits, executions workers hold, and a run paused for a human in
neither (issue 26, item 4)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.domain.execution import Execution, ExecutionStatus, utcnow
from agentrunner.domain.plan import PlanRun, PlanRunStatus
from agentrunner.domain.tool_gates import Decision, PauseReason, PendingToolCall, ToolCallAnswer
from agentrunner.ports.backlog import AgentBacklog

NOW = utcnow()


@pytest.fixture(
    params=[pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]
)
def backlog_url(request: pytest.FixtureRequest) -> str:
    """An empty database of this test's own, once per database (sync: see `state_store_url`)."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def store(backlog_url: str) -> AsyncIterator[SQLStateStore]:
    store = SQLStateStore(backlog_url, pool_size=2, max_overflow=2)
    await store.start()
    yield store
    await store.close()


def _execution(
    execution_id: str, agent: str, status: ExecutionStatus, age_seconds: float, **fields: object
) -> Execution:
    return Execution.model_validate(
        {
            "execution_id": execution_id,
            "agent": agent,
            "status": status,
            "trace_id": f"t-{execution_id}",
            "created_at": NOW - timedelta(seconds=age_seconds),
            **fields,
        }
    )


def _answered(seconds_ago: float) -> PendingToolCall:
    asked = NOW - timedelta(hours=2)
    answer = ToolCallAnswer(decision=Decision.APPROVE, answered_at=NOW - timedelta(seconds=seconds_ago))
    return PendingToolCall(
        reason=PauseReason.APPROVAL, tool="kit__step", call_id="c1", generation=1, seq=1, asked_at=asked, answer=answer
    )


async def test_queued_and_held_executions_are_counted_and_paused_runs_are_not(store: SQLStateStore) -> None:
    started = {"started_at": NOW - timedelta(hours=1)}
    rows = [
        _execution("q-old", "worker", ExecutionStatus.QUEUED, 30),
        _execution("q-new", "worker", ExecutionStatus.QUEUED, 5),
        _execution("r-1", "worker", ExecutionStatus.RUNNING, 60, **started),
        _execution("done", "worker", ExecutionStatus.SUCCEEDED, 90, finished_at=NOW),
        # Waits for a human before a tool call: held by no worker, waiting for no worker.
        _execution("gate", "worker", ExecutionStatus.WAITING_APPROVAL, 7200, **started),
        # Queued again by an approval given 10 s ago: it waits since then, not since its creation.
        _execution("requeued", "gated", ExecutionStatus.QUEUED, 7200, pending_tool_call=_answered(10), **started),
        # A collaborative run's execution runs while its run waits for a human.
        _execution("lead-paused", "lead", ExecutionStatus.RUNNING, 600, **started),
        _execution("lead-running", "lead", ExecutionStatus.RUNNING, 20, **started),
    ]
    for execution in rows:
        await store.create_execution(execution)
    for run_id, status in (("lead-paused", PlanRunStatus.AWAITING_APPROVAL), ("lead-running", PlanRunStatus.RUNNING)):
        await store.create_plan_run(PlanRun(id=run_id, agent="lead", status=status, trace_id=f"t-{run_id}"))

    backlog = await store.backlog(["worker", "gated", "lead", "idle"])

    worker, gated, lead = backlog["worker"], backlog["gated"], backlog["lead"]
    assert (worker.queued, worker.in_hand) == (2, 1)
    assert worker.oldest_queued_at == NOW - timedelta(seconds=30)
    assert (gated.queued, gated.in_hand) == (1, 0)
    assert gated.oldest_queued_at == NOW - timedelta(seconds=10)
    assert lead == AgentBacklog(queued=0, oldest_queued_at=None, in_hand=1)
    assert backlog["idle"] == AgentBacklog()


async def test_only_the_agents_asked_for_are_answered(store: SQLStateStore) -> None:
    await store.create_execution(_execution("x", "other", ExecutionStatus.QUEUED, 5))

    assert await store.backlog(["mine"]) == {"mine": AgentBacklog()}
