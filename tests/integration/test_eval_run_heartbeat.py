"""An eval run whose node dies cannot save its end: while it runs, its record carries a
heartbeat, and a `running` run silent for three heartbeats is shown as `error`
("abandoned") instead of `running` for ever; a live run with a long case keeps beating and
stays `running`."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

from agentrunner.adapters.config.evals import EvalFiles
from agentrunner.api.evals import summary_of
from agentrunner.domain.eval_run import EvalRun, EvalRunStatus
from agentrunner.domain.execution import utcnow
from agentrunner.domain.llm import LLMRequest
from agentrunner.runtime.evals import EvalRunner
from tests.integration.conftest import node_on

SLOW = "name: slow\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: scripted, model: s}\n"
SUITE = "agent: slow\ncases:\n  - name: long\n    task_data: {prompt: take your time}\n    expect: [{contains: done}]\n"
BEAT = 0.2  # seconds: the runner's heartbeat in this test


async def test_a_run_whose_node_died_is_shown_abandoned_not_running_for_ever(tmp_path: Path) -> None:
    async with node_on("memory", tmp_path, {"slow.yml": SLOW}) as node:
        long_ago = utcnow() - timedelta(minutes=10)
        orphan = EvalRun(run_id="r-orphan", suite="s", agent="slow", total_cases=3, created_at=long_ago)
        await node.store.eval_runs.create_eval_run(orphan)
        fresh = EvalRun(run_id="r-fresh", suite="s", agent="slow", total_cases=3)
        await node.store.eval_runs.create_eval_run(fresh)

        seen = await node.evals.run("r-orphan")
        listed = {run.run_id: run.status for run in await node.evals.runs()}
        still = await node.evals.run("r-fresh")

    assert seen.status is EvalRunStatus.ERROR
    assert seen.error is not None
    assert "abandoned" in seen.error
    assert summary_of(seen).error == seen.error  # the list (and the dashboard's) says why too
    assert listed == {"r-orphan": EvalRunStatus.ERROR, "r-fresh": EvalRunStatus.RUNNING}
    assert still.status is EvalRunStatus.RUNNING


async def test_a_live_run_with_a_long_case_keeps_beating_and_stays_running(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def slow_model(request: LLMRequest) -> str:
        await release.wait()
        return "done"

    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "slow.yml").write_text(SUITE)
    async with node_on("memory", tmp_path, {"slow.yml": SLOW}, script=slow_model) as node:
        runner = EvalRunner(
            orchestrator=node.orchestrator,
            runs=node.store.eval_runs,
            suites=EvalFiles(tmp_path / "evals"),
            heartbeat_seconds=BEAT,
        )
        started = await runner.start("slow")
        beats: set[datetime] = set()
        async with asyncio.timeout(30):
            while len(beats) < 5:  # five beats saved: well past three heartbeats of silence
                stored = await node.store.eval_runs.get_eval_run(started.run_id)
                if stored.heartbeat_at is not None:
                    beats.add(stored.heartbeat_at)
                await asyncio.sleep(BEAT / 2)
        during = await runner.run(started.run_id)
        release.set()
        async with asyncio.timeout(30):
            while (ended := await runner.run(started.run_id)).status is EvalRunStatus.RUNNING:
                await asyncio.sleep(0.05)
        await runner.stop()

    assert during.status is EvalRunStatus.RUNNING
    assert during.cases == []
    assert ended.status is EvalRunStatus.PASSED
