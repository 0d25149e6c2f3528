"""Eval scores per version (`domain/eval_scores.py`): a suite's runs with a verdict grouped
by the agent's version, one figure per version in the order of its first run; runs under
way or in error do not count."""

from __future__ import annotations

from datetime import timedelta

from agentrunner.domain.eval_run import CaseResult, EvalRun, EvalRunStatus
from agentrunner.domain.eval_scores import scores_per_version
from agentrunner.domain.execution import utcnow

START = utcnow()


def _run(
    run_id: str, version: int | None, passed: list[bool], *, at: int, status: EvalRunStatus, suite: str = "triage"
) -> EvalRun:
    cases = [
        CaseResult(case=f"c{n}", passed=ok, score=1.0 if ok else 0.5, status="succeeded", cost_usd=0.01)
        for n, ok in enumerate(passed)
    ]
    return EvalRun(
        run_id=run_id,
        suite=suite,
        agent="triage",
        agent_version=version,
        total_cases=len(passed),
        cases=cases,
        status=status,
        created_at=START + timedelta(minutes=at),
    )


PASSED, FAILED = EvalRunStatus.PASSED, EvalRunStatus.FAILED


def test_one_figure_per_version_in_the_order_of_its_first_run() -> None:
    runs = [
        _run("r3", 2, [True, True], at=3, status=PASSED),
        _run("r1", 1, [True, False], at=1, status=FAILED),
        _run("r2", 1, [True, True], at=2, status=PASSED),
        _run("r4", 1, [False, False], at=4, status=FAILED),  # back on v1 after v2: still v1's point
        _run("r5", 2, [True], at=5, status=EvalRunStatus.RUNNING),
        _run("r6", 3, [False], at=6, status=EvalRunStatus.ERROR),
        _run("o1", None, [True], at=0, status=PASSED, suite="billing"),
    ]

    billing, triage = scores_per_version(runs)

    assert (billing.suite, [v.agent_version for v in billing.versions]) == ("billing", [None])
    assert [v.agent_version for v in triage.versions] == [1, 2]
    v1, v2 = triage.versions
    assert (v1.runs, v1.pass_rate, v1.last_run_id, v1.last_pass_rate) == (3, 0.5, "r4", 0.0)
    assert (v1.first_run_at, v1.last_run_at) == (START + timedelta(minutes=1), START + timedelta(minutes=4))
    assert v1.mean_score == round((0.75 + 1.0 + 0.5) / 3, 6)
    assert v1.cost_usd == 0.06
    assert (v2.runs, v2.pass_rate, v2.mean_score, v2.last_mean_score) == (1, 1.0, 1.0, 1.0)


def test_no_run_with_a_verdict_no_suite() -> None:
    assert scores_per_version([_run("r", 1, [True], at=0, status=EvalRunStatus.RUNNING)]) == []
    assert scores_per_version([]) == []
