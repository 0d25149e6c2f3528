"""StateStore contract, eval runs (issue 24): a run is created, rewritten as its cases end,
read back whole, listed by suite, tenant and status, and found as a baseline by suite,
tenant and agent version; on every backend (SQLite, PostgreSQL, either behind a cache)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agentrunner.domain.errors import ConflictError, EvalRunNotFoundError
from agentrunner.domain.eval_run import CaseResult, EvalRun, EvalRunStatus, ExpectationOutcome, JudgeVerdict
from agentrunner.domain.event import new_id
from agentrunner.domain.execution import utcnow
from agentrunner.ports.retention import PurgeKind
from agentrunner.ports.state import StateStore


def _run(suite: str = "triage", *, tenant: str | None = None, version: int | None = 1, **fields: object) -> EvalRun:
    return EvalRun(
        run_id=new_id(), suite=suite, agent="triage", agent_version=version, tenant=tenant, total_cases=2, **fields
    )


CASE = CaseResult(
    case="refund",
    passed=False,
    score=0.25,
    execution_id="e1",
    status="succeeded",
    cost_usd=0.0012,
    latency_ms=820.5,
    expectations=[ExpectationOutcome(kind="contains", passed=False, detail="the output does not contain 'refund'")],
    judge=JudgeVerdict(agent="grader", score=0.25, reason="rude", execution_id="e2"),
)


async def test_a_run_is_rewritten_as_its_cases_end_and_read_back_whole(state_store: StateStore) -> None:
    run = _run(tenant="key-a")
    await state_store.create_eval_run(run)
    created = await state_store.get_eval_run(run.run_id)
    ended = run.model_copy(update={"cases": [CASE], "status": EvalRunStatus.FAILED, "finished_at": utcnow()})
    await state_store.save_eval_run(ended)

    read = await state_store.get_eval_run(run.run_id)

    assert created == run
    assert read == ended
    assert read.cases[0].judge == CASE.judge
    assert (read.pass_rate, read.cost_usd) == (0.0, 0.0012)


async def test_an_unknown_run_is_not_found_and_an_id_is_created_once(state_store: StateStore) -> None:
    run = _run()
    await state_store.create_eval_run(run)

    with pytest.raises(ConflictError):
        await state_store.create_eval_run(run)
    with pytest.raises(EvalRunNotFoundError):
        await state_store.get_eval_run("no-such-run")
    with pytest.raises(EvalRunNotFoundError):
        await state_store.save_eval_run(_run())


async def test_runs_are_listed_and_the_latest_ended_one_found_by_suite_tenant_and_version(
    state_store: StateStore,
) -> None:
    start = utcnow()
    old = _run(tenant="key-a", version=1, status=EvalRunStatus.PASSED, created_at=start)
    newer = _run(tenant="key-a", version=1, status=EvalRunStatus.FAILED, created_at=start + timedelta(seconds=1))
    on_v2 = _run(tenant="key-a", version=2, status=EvalRunStatus.PASSED, created_at=start + timedelta(seconds=2))
    running = _run(tenant="key-a", version=2, created_at=start + timedelta(seconds=3))
    others = _run(tenant="key-b", version=2, status=EvalRunStatus.PASSED, created_at=start + timedelta(seconds=4))
    other_suite = _run("billing", tenant="key-a", status=EvalRunStatus.PASSED, created_at=start + timedelta(seconds=5))
    for run in (old, newer, on_v2, running, others, other_suite):
        await state_store.create_eval_run(run)

    assert await state_store.latest_eval_run("triage", tenant="key-a", agent_version=1) == newer
    assert await state_store.latest_eval_run("triage", tenant="key-a") == on_v2
    assert await state_store.latest_eval_run("triage", tenant="key-a", finished_only=False) == running
    assert await state_store.latest_eval_run("triage", tenant=None) == others  # an admin sees every tenant's
    assert await state_store.latest_eval_run("triage", tenant="key-c") is None
    assert await state_store.latest_eval_run("triage", tenant="key-a", agent_version=3) is None
    listed = await state_store.list_eval_runs(suite="triage", tenant="key-a", limit=3)
    assert [run.run_id for run in listed] == [running.run_id, on_v2.run_id, newer.run_id]
    everyone = await state_store.list_eval_runs(suite=None, tenant=None)
    assert [run.run_id for run in everyone] == [r.run_id for r in (other_suite, others, running, on_v2, newer, old)]
    verdicts = await state_store.list_eval_runs(
        suite="triage", tenant="key-a", statuses={EvalRunStatus.PASSED, EvalRunStatus.FAILED}
    )
    assert [run.run_id for run in verdicts] == [on_v2.run_id, newer.run_id, old.run_id]  # not the running one
    assert await state_store.list_eval_runs(suite=None, tenant=None, statuses={EvalRunStatus.ERROR}) == []


async def test_the_purge_deletes_ended_runs_past_the_window_and_keeps_running_ones(state_store: StateStore) -> None:
    long_ago = utcnow() - timedelta(days=60)
    ended = _run(status=EvalRunStatus.PASSED, created_at=long_ago)
    running = _run(created_at=long_ago)
    recent = _run(status=EvalRunStatus.FAILED)
    for run in (ended, running, recent):
        await state_store.create_eval_run(run)

    purged = await state_store.purge(PurgeKind.EVAL_RUNS, before=utcnow() - timedelta(days=30), limit=100)

    assert purged == 1
    with pytest.raises(EvalRunNotFoundError):
        await state_store.get_eval_run(ended.run_id)
    assert (await state_store.get_eval_run(running.run_id)).status is EvalRunStatus.RUNNING
    assert (await state_store.get_eval_run(recent.run_id)).status is EvalRunStatus.FAILED
