"""Eval runs on the orchestrator (8003): `GET /evals` (the suites), `POST /evals/runs` (run
one), `GET /evals/runs/{id}` (a run as it stands: its cases so far, then its verdict and
its comparison with a baseline). Mounted into the orchestrator app by the composition root.

A run is its caller's tenant's, as its executions are: another tenant's run id is answered
as one that does not exist."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from agentrunner.domain.eval_run import EvalRun
from agentrunner.domain.eval_suite import SUITE_NAME_PATTERN
from agentrunner.runtime.evals import MAX_CONCURRENCY, EvalRunner

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

    @router.get("/evals/runs/{run_id}", response_model=EvalRun)
    async def get_eval_run(run_id: RunId) -> EvalRun:
        """An eval run: its cases so far, then its status (`passed` or `failed` against the
        suite's threshold) and what regressed or improved since its baseline."""
        return await runner.run(run_id)

    return router
