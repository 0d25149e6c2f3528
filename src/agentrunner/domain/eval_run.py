"""An eval run: a suite's cases run once through the platform, each case's outcome, and the
comparison with a baseline run.

A case passes when its execution succeeded, every expectation held, and its judge (if any)
gave at least the judge's `min_score`. Its score is the judge's score when judged, else the
share of its expectations that held. The run passes when the share of cases that passed is
at least the suite's `threshold`. Against a baseline (an earlier run of the same suite), a
case regressed when it passed there and fails now, and improved the other way round.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from agentrunner.domain.eval_suite import EvalCase, JudgeSpec
from agentrunner.domain.execution import utcnow
from agentrunner.domain.expectations import ExpectationResult, RunFacts, check_all

MAX_REASON_CHARS = 2_000


class EvalRunStatus(StrEnum):
    """Where a run is: under way, then passed or failed against its threshold; `error` when
    it could not finish (its node stopped, the suite could not run)."""

    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"


class ExpectationOutcome(BaseModel):
    """One expectation of a case, checked."""

    model_config = ConfigDict(frozen=True)

    kind: str
    passed: bool
    detail: str = ""


class JudgeVerdict(BaseModel):
    """What the judge agent said of a case's answer (or why it said nothing usable)."""

    model_config = ConfigDict(frozen=True)

    agent: str
    score: float | None = None
    reason: str = ""
    execution_id: str | None = None
    error: str | None = None


class CaseResult(BaseModel):
    """One case of a run: its execution's facts, the checks and the verdict."""

    model_config = ConfigDict(frozen=True)

    case: str
    passed: bool
    score: float
    execution_id: str | None = None
    status: str
    cost_usd: float | None = None
    latency_ms: float | None = None
    expectations: list[ExpectationOutcome] = Field(default_factory=list)
    judge: JudgeVerdict | None = None
    error: str | None = None


class CaseChange(BaseModel):
    """A case whose outcome differs from the baseline's."""

    model_config = ConfigDict(frozen=True)

    case: str
    passed_before: bool
    passed_now: bool
    score_before: float
    score_now: float


class Comparison(BaseModel):
    """A run against its baseline: what regressed, what improved, by case name."""

    model_config = ConfigDict(frozen=True)

    baseline_run_id: str
    baseline_agent_version: int | None = None
    regressed: list[CaseChange] = Field(default_factory=list)
    improved: list[CaseChange] = Field(default_factory=list)
    # Cases of this run the baseline did not have (added to the suite since).
    new_cases: list[str] = Field(default_factory=list)


class EvalRun(BaseModel):
    """The durable record of one run of one suite."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    suite: str
    agent: str
    agent_version: int | None = None
    tenant: str | None = None
    status: EvalRunStatus = EvalRunStatus.RUNNING
    threshold: float = 1.0
    concurrency: int = 1
    total_cases: int
    cases: list[CaseResult] = Field(default_factory=list)
    baseline_run_id: str | None = None
    comparison: Comparison | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    # The last sign of life of the node running it (saved at least every heartbeat while it
    # runs): a `running` run silent for longer lost its node (`as_seen`).
    heartbeat_at: datetime | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed_cases(self) -> int:
        """How many cases passed so far."""
        return sum(case.passed for case in self.cases)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pass_rate(self) -> float:
        """The share of the suite's cases that passed (0 while none has ended)."""
        return self.passed_cases / self.total_cases if self.total_cases else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mean_score(self) -> float | None:
        """The mean score of the cases that ended."""
        return sum(case.score for case in self.cases) / len(self.cases) if self.cases else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> float | None:
        """What the cases' executions cost (None when none has a known cost)."""
        costs = [case.cost_usd for case in self.cases if case.cost_usd is not None]
        return round(sum(costs), 8) if costs else None


def judged_verdict(spec: JudgeSpec, execution_id: str, status: str, output: Any) -> JudgeVerdict:
    """The verdict in a judge execution's parsed output `{"score", "reason"}`."""
    if status != "succeeded":
        return JudgeVerdict(agent=spec.agent, execution_id=execution_id, error=f"the judge's execution {status}")
    if not isinstance(output, dict) or not isinstance(output.get("score"), int | float):
        return JudgeVerdict(agent=spec.agent, execution_id=execution_id, error="the judge gave no numeric score")
    score = min(max(float(output["score"]), 0.0), 1.0)
    reason = str(output.get("reason") or "")[:MAX_REASON_CHARS]
    return JudgeVerdict(agent=spec.agent, score=score, reason=reason, execution_id=execution_id)


def case_result(
    case: EvalCase,
    facts: RunFacts,
    *,
    execution_id: str | None,
    judge: JudgeSpec | None = None,
    verdict: JudgeVerdict | None = None,
) -> CaseResult:
    """The outcome of `case` from its execution's `facts` and its judge's `verdict`."""
    checked: list[ExpectationResult] = check_all(case.expect, facts)
    held = sum(result.passed for result in checked)
    succeeded = facts.status == "succeeded"
    judged_ok = judge is None or (
        verdict is not None and verdict.score is not None and verdict.score >= judge.min_score
    )
    if judge is not None:
        score = verdict.score if verdict is not None and verdict.score is not None else 0.0
    else:
        score = held / len(checked) if checked else (1.0 if succeeded else 0.0)
    return CaseResult(
        case=case.name,
        passed=succeeded and held == len(checked) and judged_ok,
        score=round(score, 6),
        execution_id=execution_id,
        status=facts.status,
        cost_usd=facts.cost_usd,
        latency_ms=round(facts.latency_ms, 3) if facts.latency_ms is not None else None,
        expectations=[ExpectationOutcome(**result.as_json()) for result in checked],
        judge=verdict,
        error=None if succeeded else f"the execution {facts.status}",
    )


def compare(cases: list[CaseResult], baseline: EvalRun) -> Comparison:
    """`cases` against `baseline`'s, by case name."""
    before = {case.case: case for case in baseline.cases}
    regressed: list[CaseChange] = []
    improved: list[CaseChange] = []
    new: list[str] = []
    for case in cases:
        earlier = before.get(case.case)
        if earlier is None:
            new.append(case.case)
            continue
        if earlier.passed == case.passed:
            continue
        change = CaseChange(
            case=case.case,
            passed_before=earlier.passed,
            passed_now=case.passed,
            score_before=earlier.score,
            score_now=case.score,
        )
        (regressed if earlier.passed else improved).append(change)
    return Comparison(
        baseline_run_id=baseline.run_id,
        baseline_agent_version=baseline.agent_version,
        regressed=regressed,
        improved=improved,
        new_cases=new,
    )


def as_seen(run: EvalRun, *, now: datetime, silent_after: timedelta) -> EvalRun:
    """`run` as a caller sees it: a `running` run with no sign of life for `silent_after`
    lost the node that ran it (killed, its machine gone) and will not end: it is shown as
    `error`, saying so, instead of `running` for ever."""
    last = run.heartbeat_at or run.created_at
    if run.status is not EvalRunStatus.RUNNING or now - last <= silent_after:
        return run
    return run.model_copy(
        update={
            "status": EvalRunStatus.ERROR,
            "error": (
                f"abandoned: the node running it stopped (no sign of life since {last.isoformat()}): start it again"
            ),
            "finished_at": last,
        }
    )


def finished(run: EvalRun, baseline: EvalRun | None = None) -> EvalRun:
    """`run` ended: passed or failed against its threshold, compared with `baseline`."""
    passed = run.total_cases > 0 and run.passed_cases / run.total_cases >= run.threshold
    return run.model_copy(
        update={
            "status": EvalRunStatus.PASSED if passed else EvalRunStatus.FAILED,
            "comparison": compare(run.cases, baseline) if baseline is not None else None,
            "finished_at": utcnow(),
        }
    )
