"""The eval runner: runs the cases of an eval suite through the platform and records the run.

Each case is an invocation of the suite's agent like any other (the orchestrator accepts it,
a pool runs it, the store records it), tagged with the run in its `origin`
(`{"kind": "eval", "eval_run_id", "case"}`), so nothing of the path is skipped and every
case's execution stays readable on its own. When the case has a judge, the judge agent is
invoked the same way on the answer and its structured output (`{"score", "reason"}`) is the
verdict. Cases run `concurrency` at a time; the run record is saved with the cases ended so
far (every `PROGRESS_SECONDS` at most), so a caller polling `GET /evals/runs/{id}` sees the
progress.

The run is owned by the node that started it (a task of this runner, cancelled by `stop`):
a run whose node stops is saved as `error`. A run whose node dies cannot say so: while it
runs, its record carries a heartbeat saved every `heartbeat_seconds`, and a `running` run
silent for three of them is shown to callers as `error` ("abandoned"; `as_seen`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from agentrunner.background import spawn
from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.errors import AgentRunnerError, BadRequestError, ConfigError, EvalRunNotFoundError
from agentrunner.domain.eval_run import (
    CaseResult,
    EvalRun,
    EvalRunStatus,
    JudgeVerdict,
    as_seen,
    case_result,
    finished,
    judged_verdict,
)
from agentrunner.domain.eval_scores import SCORED, SuiteScores, scores_per_version
from agentrunner.domain.eval_suite import EvalCase, EvalSuite, JudgeSpec, judge_problem
from agentrunner.domain.event import new_id
from agentrunner.domain.execution import Execution, ExecutionStatus, utcnow
from agentrunner.domain.expectations import RunFacts, facts_of
from agentrunner.logs import get_logger
from agentrunner.ports.evals import EvalRuns, EvalSuites
from agentrunner.runtime.orchestrator import Orchestrator
from agentrunner.runtime.ownership import owned
from agentrunner.tracing import current_tenant, new_trace_id, traced, visible_tenant

log = get_logger(__name__)

EVAL_ORIGIN = "eval"
MAX_CONCURRENCY = 16
# How often the record of a run under way is saved with the cases ended since (the progress
# a caller polling `GET /evals/runs/{id}` sees); its end is saved at once.
PROGRESS_SECONDS = 0.25
# How often a run under way says it is alive (its record saved, with the cases ended so far):
# a case may take minutes and save nothing meanwhile.
HEARTBEAT_SECONDS = 30.0
# What a judge reads of the answer and the task: enough to judge, bounded whatever the agent said.
MAX_JUDGED_CHARS = 20_000
_VERSION = re.compile(r"^v?(\d{1,9})$")


@dataclass(frozen=True, slots=True)
class ScoresRead:
    """What `EvalRunner.scores` read: the scores per version, from `runs_read` runs."""

    suites: list[SuiteScores]
    runs_read: int


class EvalRunner:
    """Starts eval runs and owns them until they end (see the module docstring)."""

    def __init__(
        self,
        *,
        orchestrator: Orchestrator,
        runs: EvalRuns,
        suites: EvalSuites,
        case_timeout_seconds: float = 300.0,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._orchestrator = orchestrator
        self._runs = runs
        self._suites = suites
        self._case_timeout = case_timeout_seconds
        self._heartbeat = heartbeat_seconds
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def suites(self) -> EvalSuites:
        """The eval files this runner reads."""
        return self._suites

    async def start(self, suite_name: str, *, concurrency: int = 4, baseline: str | None = None) -> EvalRun:
        """Record a run of `suite_name` for the caller's tenant and start its cases; return
        the run as recorded (status `running`).

        `baseline`: an earlier run's id, or a version of the suite's agent (`3` or `v3`: the
        newest ended run of the suite on it) to compare with when the run ends.

        Raises `EvalSuiteNotFoundError`, `EvalFileError`, `AgentNotFoundError` or
        `AgentUnavailableError` (the agent or a judge), `ConfigError` for a judge without
        the structured output it needs, `EvalRunNotFoundError` for a baseline the caller
        cannot see, `BadRequestError` for a baseline of another suite."""
        suite = await asyncio.to_thread(self._suites.load, suite_name)
        registry = self._orchestrator.registry
        registry.runnable(suite.agent)
        for judge in sorted(suite.judges):
            _check_judge(registry.runnable(judge))
        earlier = await self._baseline(suite, baseline) if baseline else None
        run = EvalRun(
            run_id=new_id(),
            suite=suite.name,
            agent=suite.agent,
            agent_version=registry.version_of(suite.agent),
            tenant=current_tenant(),
            threshold=suite.threshold,
            concurrency=max(1, min(concurrency, MAX_CONCURRENCY)),
            total_cases=len(suite.cases),
            baseline_run_id=earlier.run_id if earlier else None,
        )
        await self._runs.create_eval_run(run)
        # The task inherits the caller's tenant (a context copy): its cases are the caller's.
        task = spawn(self._run(run, suite, earlier), name=f"eval-run-{run.run_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("eval run started", run_id=run.run_id, suite=suite.name, cases=len(suite.cases))
        return run

    async def run(self, run_id: str) -> EvalRun:
        """The run `run_id` as it stands, if the caller may see it (raises `EvalRunNotFoundError`)."""
        run = await self._runs.get_eval_run(run_id)
        return self._seen(owned(run, run.tenant, lambda: _not_found(run_id)))

    async def runs(self, *, suite: str | None = None, limit: int = 20) -> list[EvalRun]:
        """The runs the caller may see (its tenant's; an admin every one), newest first."""
        return [
            self._seen(run)
            for run in await self._runs.list_eval_runs(suite=suite, tenant=visible_tenant(), limit=limit)
        ]

    async def scores(self, *, suite: str | None = None, runs: int = 200) -> ScoresRead:
        """The scores per version (`domain/eval_scores.py`) of the newest `runs` runs with a
        verdict the caller may see (of `suite` when given), and how many were read."""
        read = await self._runs.list_eval_runs(suite=suite, tenant=visible_tenant(), limit=runs, statuses=SCORED)
        return ScoresRead(suites=scores_per_version(read), runs_read=len(read))

    def _seen(self, run: EvalRun) -> EvalRun:
        return as_seen(run, now=utcnow(), silent_after=timedelta(seconds=3 * self._heartbeat))

    async def stop(self) -> None:
        """Cancel the runs under way; each is saved as `error`."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _baseline(self, suite: EvalSuite, baseline: str) -> EvalRun:
        version = _VERSION.match(baseline)
        if version:
            found = await self._runs.latest_eval_run(
                suite.name, tenant=visible_tenant(), agent_version=int(version.group(1))
            )
            if found is None:
                raise EvalRunNotFoundError(
                    f"no ended run of suite {suite.name!r} on version {version.group(1)} of {suite.agent!r}"
                    " to compare with: run the suite on that version first, or name a run id",
                    suite=suite.name,
                )
            return found
        earlier = await self.run(baseline)
        if earlier.suite != suite.name:
            raise BadRequestError(
                f"baseline {baseline} is a run of suite {earlier.suite!r}, not {suite.name!r}:"
                " compare runs of one suite"
            )
        if earlier.status is EvalRunStatus.RUNNING:
            raise BadRequestError(f"baseline {baseline} has not ended: wait for it, or name an ended run")
        return earlier

    async def _run(self, run: EvalRun, suite: EvalSuite, baseline: EvalRun | None) -> None:
        ended: dict[str, CaseResult] = {}
        slots = asyncio.Semaphore(run.concurrency)
        saving = asyncio.Lock()
        order = [case.name for case in suite.cases]

        def with_cases() -> EvalRun:
            cases = [ended[name] for name in order if name in ended]
            return run.model_copy(update={"cases": cases, "heartbeat_at": utcnow()})

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(self._heartbeat)
                async with saving:
                    with contextlib.suppress(AgentRunnerError):  # the next beat tries again
                        await self._runs.save_eval_run(with_cases())

        saved_at = time.monotonic()

        async def one(case: EvalCase) -> None:
            nonlocal saved_at
            async with slots:
                result = await self._case(run, suite, case)
            async with saving:  # one writer: a later save never loses an earlier case
                ended[case.name] = result
                # The whole record is rewritten: at most every PROGRESS_SECONDS, or a run of
                # n cases would write n records growing to n cases (quadratic).
                if time.monotonic() - saved_at >= PROGRESS_SECONDS:
                    await self._runs.save_eval_run(with_cases())
                    saved_at = time.monotonic()

        beating = spawn(heartbeat(), name=f"eval-run-heartbeat-{run.run_id}")

        async def stop_beating() -> None:
            async with saving:  # held: the beat is asleep or waiting, never cut off in a save
                beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating

        try:
            async with asyncio.TaskGroup() as group:
                for case in suite.cases:
                    group.create_task(one(case))
            await stop_beating()
            await self._runs.save_eval_run(finished(with_cases(), baseline))
            log.info("eval run ended", run_id=run.run_id, suite=suite.name)
        except asyncio.CancelledError:
            await stop_beating()
            await self._end_in_error(with_cases(), "the node stopped before the run ended: start it again")
            raise
        except Exception as exc:  # any failure is the run's error, recorded for its caller
            await stop_beating()
            log.exception("eval run failed", run_id=run.run_id, suite=suite.name)
            await self._end_in_error(with_cases(), f"the run could not go on: {exc}")

    async def _end_in_error(self, run: EvalRun, error: str) -> None:
        ended = run.model_copy(update={"status": EvalRunStatus.ERROR, "error": error[:2000], "finished_at": utcnow()})
        with contextlib.suppress(AgentRunnerError):  # the store may be what failed: logged above
            await self._runs.save_eval_run(ended)

    async def _case(self, run: EvalRun, suite: EvalSuite, case: EvalCase) -> CaseResult:
        origin = {"kind": EVAL_ORIGIN, "eval_run_id": run.run_id, "case": case.name}
        try:
            execution = await self._invoke(suite.agent, case.task_data, case.session, origin)
        except AgentRunnerError as exc:
            return CaseResult(case=case.name, passed=False, score=0.0, status="refused", error=str(exc)[:2000])
        facts = facts_of(execution)
        if not execution.status.is_terminal:
            error = f"the execution did not end within {self._case_timeout:g} s"
            if execution.status is ExecutionStatus.WAITING_APPROVAL:  # answered at once: nobody will
                error = "the execution waits for a human before a tool call, which an eval case does not answer"
            return case_result(case, facts, execution_id=execution.execution_id).model_copy(update={"error": error})
        judge = suite.judge_of(case)
        verdict = await self._judge(judge, origin, case, facts) if judge and facts.status == "succeeded" else None
        return case_result(case, facts, execution_id=execution.execution_id, judge=judge, verdict=verdict)

    async def _invoke(
        self, agent: str, task_data: dict[str, Any], session: str | None, origin: dict[str, Any]
    ) -> Execution:
        with traced(new_trace_id()):  # each case is a request of its own, traced apart
            execution = await self._orchestrator.invoke(
                agent, task_data, session_id=session, origin=origin, wait=self._case_timeout
            )
        return execution

    async def _judge(self, judge: JudgeSpec, origin: dict[str, Any], case: EvalCase, facts: RunFacts) -> JudgeVerdict:
        prompt = judge_prompt(judge.rubric, case.task_data, facts)
        try:
            execution = await self._invoke(judge.agent, {"prompt": prompt}, None, {**origin, "judge": True})
        except AgentRunnerError as exc:
            return JudgeVerdict(agent=judge.agent, error=str(exc)[:2000])
        return judged_verdict(judge, execution.execution_id, execution.status.value, execution.output_json)


def judge_prompt(rubric: str, task_data: dict[str, Any], facts: RunFacts) -> str:
    """What the judge agent is asked: the rubric, the task and the answer, each bounded."""
    task = json.dumps(task_data, ensure_ascii=False, default=str)[:MAX_JUDGED_CHARS]
    answer = (facts.output or "")[:MAX_JUDGED_CHARS]
    return (
        f"Rubric:\n{rubric}\n\nThe task the agent was given (JSON):\n{task}\n\nThe agent's answer:\n{answer}\n\n"
        "Score the answer against the rubric from 0 (fails it) to 1 (meets it fully), "
        'and say why: answer {"score": <0-1>, "reason": "<why>"}.'
    )


def _check_judge(config: AgentConfig) -> None:
    problem = judge_problem(config)
    if problem:
        raise ConfigError(problem, agent=config.name)


def _not_found(run_id: str) -> EvalRunNotFoundError:
    return EvalRunNotFoundError(f"no eval run {run_id!r} (POST /evals/runs starts one)", run_id=run_id)
