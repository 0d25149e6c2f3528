"""Eval runs as the state store keeps them: a facet of the store (`ports/state.py`), in its
own module as agent versions are."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from agentrunner.domain.eval_run import EvalRun, EvalRunStatus
from agentrunner.domain.eval_suite import EvalSuite


class EvalRuns(Protocol):
    """Runs of eval suites (`domain/eval_run.py`): written by the eval runner of the
    orchestrator role as cases end, read by the API and the CLI. Each keeps its tenant;
    a read by id returns the run whatever its tenant (the caller checks, as for executions)."""

    async def create_eval_run(self, run: EvalRun) -> None:
        """Record a new run (raises `ConflictError` when its id is taken)."""
        ...

    async def save_eval_run(self, run: EvalRun) -> None:
        """Replace a recorded run by `run` (its cases so far, its end); raises
        `EvalRunNotFoundError` for a run never created."""
        ...

    async def get_eval_run(self, run_id: str) -> EvalRun:
        """The run `run_id` (raises `EvalRunNotFoundError`)."""
        ...

    async def list_eval_runs(
        self,
        *,
        suite: str | None,
        tenant: str | None,
        limit: int = 20,
        statuses: Collection[EvalRunStatus] | None = None,
    ) -> list[EvalRun]:
        """Runs newest first: of `suite` when given, of `tenant` when given (None: every
        tenant's), recorded with one of `statuses` when given, at most `limit`."""
        ...

    async def latest_eval_run(
        self, suite: str, *, tenant: str | None, agent_version: int | None = None, finished_only: bool = True
    ) -> EvalRun | None:
        """The newest run of `suite` recorded for `tenant` (None: any tenant's), on
        `agent_version` when given, ended when `finished_only`; None when there is none."""
        ...


class EvalSuites(Protocol):
    """The eval files the platform can run (`evals/<name>.yml`). Blocking file reads: async
    callers run them in a thread."""

    def names(self) -> list[str]:
        """The suites there are, by name."""
        ...

    def load(self, name: str) -> EvalSuite:
        """The suite `name`, parsed and checked (raises `EvalSuiteNotFoundError`, or
        `EvalFileError` for a file refused or invalid)."""
        ...
