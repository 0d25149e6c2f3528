"""Eval scores per version: the ended runs of each suite grouped by the version of the agent
they ran on, one figure per version (the dashboard's chart of scores per version over time,
`GET /evals/scores`).

Only runs with a verdict count (`passed` or `failed`): a run under way has not scored yet,
and one that ended in `error` scored only the cases it reached. A version's figures are the
means over its runs (each run weighs the same), with its newest run's beside them; versions
come in the order of their first run, suites by name."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from agentrunner.domain.eval_run import EvalRun, EvalRunStatus

SCORED = frozenset({EvalRunStatus.PASSED, EvalRunStatus.FAILED})


class VersionScores(BaseModel):
    """A suite's runs on one version of its agent."""

    model_config = ConfigDict(frozen=True)

    agent_version: int | None = Field(description="None: runs recorded before the agent had versions.")
    runs: int
    first_run_at: datetime
    last_run_at: datetime
    pass_rate: float = Field(description="The mean over its runs of the share of cases that passed.")
    mean_score: float | None = Field(description="The mean over its runs of their mean case score.")
    last_run_id: str
    last_pass_rate: float
    last_mean_score: float | None
    cost_usd: float | None = Field(description="What its runs cost together (None: no known cost).")


class SuiteScores(BaseModel):
    """One suite (of one agent): its versions in the order they were first evaluated."""

    model_config = ConfigDict(frozen=True)

    suite: str
    agent: str
    versions: list[VersionScores]


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


def _version(runs: list[EvalRun]) -> VersionScores:
    """The figures of `runs` (one version's, oldest first)."""
    last = runs[-1]
    scores = [run.mean_score for run in runs if run.mean_score is not None]
    costs = [run.cost_usd for run in runs if run.cost_usd is not None]
    return VersionScores(
        agent_version=last.agent_version,
        runs=len(runs),
        first_run_at=runs[0].created_at,
        last_run_at=last.created_at,
        pass_rate=_mean([run.pass_rate for run in runs]) or 0.0,
        mean_score=_mean(scores),
        last_run_id=last.run_id,
        last_pass_rate=round(last.pass_rate, 6),
        last_mean_score=round(last.mean_score, 6) if last.mean_score is not None else None,
        cost_usd=round(sum(costs), 8) if costs else None,
    )


def scores_per_version(runs: Iterable[EvalRun]) -> list[SuiteScores]:
    """`runs` (in any order) with a verdict, by suite and agent, then by version."""
    grouped: dict[tuple[str, str], dict[int | None, list[EvalRun]]] = {}
    for run in sorted(runs, key=lambda one: (one.created_at, one.run_id)):
        if run.status in SCORED:
            grouped.setdefault((run.suite, run.agent), {}).setdefault(run.agent_version, []).append(run)
    return [
        SuiteScores(suite=suite, agent=agent, versions=[_version(one) for one in versions.values()])
        for (suite, agent), versions in sorted(grouped.items())
    ]
