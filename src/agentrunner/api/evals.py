"""Eval runs on the orchestrator (8003): `GET /evals` (the suites), `POST /evals/runs` (run
one), `GET /evals/runs` (the runs, newest first, without their cases), `GET
/evals/runs/{id}` (a run as it stands: its cases so far, then its verdict and its
comparison with a baseline), `GET /evals/scores` (each suite's scores per version of its
agent, over the newest runs). Mounted into the orchestrator app by the composition root.

A run is its caller's tenant's, as its executions are: another tenant's run id is answered
as one that does not exist."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from agentrunner.domain.eval_run import EvalRun, EvalRunStatus
from agentrunner.domain.eval_scores import SuiteScores
from agentrunner.domain.eval_suite import SUITE_NAME_PATTERN
from agentrunner.runtime.evals import MAX_CONCURRENCY, EvalRunner

# The most runs one `GET /evals/scores` reads (each a whole record, its cases included).
MAX_SCORED_RUNS = 500

RunId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class EvalRunRequest(BaseModel):
    """Body of `POST /evals/runs`."""

    model_config = ConfigDict(extra="forbid")

    suite: str = Field(pattern=SUITE_NAME_PATTERN, description="The eval file's name (`evals/<suite>.yml`).")
    concurrency: int = Field(default=4, ge=1, le=MAX_CONCURRENCY, description="Cases run at once.")
    baseline: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Compare with this: an earlier run's id, or a version of the agent (`3`): the newest "
        "ended run of the suite on it.",
    )


class EvalSuiteList(BaseModel):
    """The eval files the platform can run, by name."""

    suites: list[str]


class EvalRunSummary(BaseModel):
    """A run in `GET /evals/runs`: its outcome without its cases (`GET /evals/runs/{id}` has them)."""

    run_id: str
    suite: str
    agent: str
    agent_version: int | None
    status: EvalRunStatus
    total_cases: int
    passed_cases: int
    pass_rate: float
    mean_score: float | None
    cost_usd: float | None
    threshold: float
    baseline_run_id: str | None
    regressed: int = Field(description="Cases that passed in the baseline and fail in this run.")
    improved: int = Field(description="Cases that failed in the baseline and pass in this run.")
    error: str | None = Field(description="Why it ended in `error` (`abandoned: ...` when its node stopped).")
    created_at: datetime
    finished_at: datetime | None


class EvalRunList(BaseModel):
    """Eval runs, newest first."""

    items: list[EvalRunSummary]


class EvalScores(BaseModel):
    """Each suite's scores per version of its agent (versions in the order of their first
    run), over the newest `runs_read` runs with a verdict (at most the `runs` asked)."""

    suites: list[SuiteScores]
    runs_read: int = Field(description="The runs the figures were drawn from (`runs`: the newest, at most).")


def summary_of(run: EvalRun) -> EvalRunSummary:
    """`run` without its cases."""
    comparison = run.comparison
    return EvalRunSummary(
        **run.model_dump(include=set(EvalRunSummary.model_fields) - {"regressed", "improved"}),
        regressed=len(comparison.regressed) if comparison else 0,
        improved=len(comparison.improved) if comparison else 0,
    )


def eval_routes(runner: EvalRunner) -> APIRouter:
    """The eval routes, over `runner`."""
    router = APIRouter(tags=["evals"])

    @router.get("/evals", response_model=EvalSuiteList)
    async def list_eval_suites() -> EvalSuiteList:
        """The eval suites (`<name>.yml` in EVALS_DIR)."""
        return EvalSuiteList(suites=await asyncio.to_thread(runner.suites.names))

    @router.post("/evals/runs", response_model=EvalRun, status_code=202)
    async def start_eval_run(body: EvalRunRequest) -> EvalRun:
        """Run a suite's cases through the platform; answered at once with the run (status
        `running`): follow it with `GET /evals/runs/{run_id}`."""
        return await runner.start(body.suite, concurrency=body.concurrency, baseline=body.baseline)

    @router.get("/evals/runs", response_model=EvalRunList)
    async def list_eval_runs(
        suite: Annotated[str | None, Query(pattern=SUITE_NAME_PATTERN, description="Only this suite's runs.")] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> EvalRunList:
        """Eval runs the caller may see (its tenant's; an admin's: all), newest first, with
        their outcome (the scores per version over time)."""
        return EvalRunList(items=[summary_of(run) for run in await runner.runs(suite=suite, limit=limit)])

    @router.get("/evals/scores", response_model=EvalScores)
    async def eval_scores(
        suite: Annotated[str | None, Query(pattern=SUITE_NAME_PATTERN, description="Only this suite.")] = None,
        runs: Annotated[
            int, Query(ge=1, le=MAX_SCORED_RUNS, description="Read at most this many runs, the newest.")
        ] = 200,
    ) -> EvalScores:
        """The scores of each suite per version of its agent, for the runs the caller may see
        (its tenant's; an admin's: all) that ended `passed` or `failed`: per version, how many
        runs, their mean pass rate and mean score, the newest run's, their cost, and when the
        version was first and last evaluated (the dashboard's chart of scores per version)."""
        read = await runner.scores(suite=suite, runs=runs)
        return EvalScores(suites=read.suites, runs_read=read.runs_read)

    @router.get("/evals/runs/{run_id}", response_model=EvalRun)
    async def get_eval_run(run_id: RunId) -> EvalRun:
        """An eval run: its cases so far, then its status (`passed` or `failed` against the
        suite's threshold) and what regressed or improved since its baseline."""
        return await runner.run(run_id)

    return router
