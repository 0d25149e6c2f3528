"""`agentrunner eval` end to end (issue 24): a suite with passing and failing cases runs
through a node on the scripted provider, with a judge agent scoring one case; the command's
exit code, its JSON and its JUnit XML are asserted, and a second run after the agent's file
changed, compared with the first (`--baseline 1`), names the one case that regressed.

The node serves its orchestrator app on a port (uvicorn, in this process) and the command
runs as a user runs it, in a process of its own."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import uvicorn

from agentrunner.domain.eval_run import EvalRunStatus
from agentrunner.domain.llm import LLMRequest
from agentrunner.node import Node
from tests.integration.conftest import node_on
from tests.ports import free_port

TRIAGE = """
name: triage
agent_type: support
execution_mode: autonomous
llm_config: {{provider: scripted, model: triage}}
system_prompt: Answer as {version}.
tools:
  - {{name: current_time}}
"""
GRADER = """
name: grader
agent_type: evaluator
execution_mode: autonomous
llm_config: {provider: scripted, model: grader}
system_prompt: Grade.
output_schema:
  type: object
  properties: {score: {type: number}, reason: {type: string}}
  required: [score, reason]
"""
SUITE = """
agent: triage
threshold: 0.6
cases:
  - name: refund
    task_data: {prompt: refund A-1}
    expect:
      - contains: refund
      - tool_called_with: {name: current_time, arguments: {timezone: UTC}}
      - tool_not_called: http_request
      - max_cost_usd: 0.01
      - max_latency_ms: 60000
  - name: classify
    task_data: {prompt: classify}
    expect:
      - json_subset: {category: billing}
      - json_schema: {type: object, required: [category, priority]}
  - name: greet
    task_data: {prompt: greet}
    expect:
      - regex: '^\\w+'
    judge: {agent: grader, rubric: Is the answer polite?, min_score: 0.5}
  - name: digits
    task_data: {prompt: digits}
    expect:
      - regex: '^\\d+$'
"""


def answer(request: LLMRequest) -> Any:
    """The scripted models: `triage` answers by its version (its system prompt) and task,
    `grader` scores an answer that thanks the user 0.9, any other 0.1."""
    if request.model == "grader":
        judged = request.messages[-1].content.split("The agent's answer:\n", 1)[1]
        polite = judged.startswith("Thanks")
        return json.dumps({"score": 0.9 if polite else 0.1, "reason": "thanks the user" if polite else "curt"})
    version = "v2" if any("v2" in m.content for m in request.messages if m.role == "system") else "v1"
    task = next(m.content for m in request.messages if m.role == "user")
    if "refund" in task:
        if not any(m.role == "tool" for m in request.messages):
            return {"tool_calls": [{"name": "current_time", "arguments": {"timezone": "UTC"}}]}
        return "Your refund for A-1 is on its way."
    if "classify" in task:
        return '{"category": "billing", "priority": 2}'
    if "greet" in task:
        return "Thanks for waiting, how can I help?" if version == "v1" else "What."
    return "no digits here"


@asynccontextmanager
async def served(node: Node) -> AsyncIterator[str]:
    """The node's orchestrator app on a port of its own."""
    port = free_port()
    config = uvicorn.Config(
        node.apps()["orchestrator"], host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not serving.done(), "uvicorn stopped"
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


async def agentrunner(*args: str, cwd: Path) -> tuple[int, str, str]:
    """Run `agentrunner ARGS`: its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentrunner",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_eval_scores_cases_writes_json_and_junit_and_a_baseline_names_the_regression(tmp_path: Path) -> None:
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "triage.yml").write_text(SUITE)
    agents = {"triage.yml": TRIAGE.format(version="v1"), "grader.yml": GRADER}
    async with node_on("memory", tmp_path, agents, script=answer) as node, served(node) as url:
        first = await agentrunner("eval", "--url", url, cwd=tmp_path)  # every suite: the one there is
        (tmp_path / "agents" / "triage.yml").write_text(TRIAGE.format(version="v2"))
        await node.reload_agents()
        second = await agentrunner(
            "eval", "triage", "--url", url, "--baseline", "1", "--json", "v2.json", "--junit", "v2.xml", cwd=tmp_path
        )
        v1 = json.loads((tmp_path / "eval-results.json").read_text())["runs"][0]
        v2 = json.loads((tmp_path / "v2.json").read_text())["runs"][0]
        async with httpx.AsyncClient(base_url=url) as http:
            judged = (await http.get(f"/executions/{v1['cases'][2]['judge']['execution_id']}")).json()
            refund = (await http.get(f"/executions/{v1['cases'][0]['execution_id']}")).json()

    code, out, err = first
    assert code == 0, out + err
    assert (v1["status"], v1["agent_version"], v1["passed_cases"], v1["total_cases"]) == ("passed", 1, 3, 4)
    assert [(c["case"], c["passed"], c["score"]) for c in v1["cases"]] == [
        ("refund", True, 1.0),
        ("classify", True, 1.0),
        ("greet", True, 0.9),
        ("digits", False, 0.0),
    ]
    assert v1["cases"][2]["judge"]["reason"] == "thanks the user"
    assert v1["cases"][3]["expectations"] == [
        {"kind": "regex", "passed": False, "detail": "the output does not match '^\\\\d+$'"}
    ]
    assert "3/4 cases passed (75%, threshold 60%)" in out
    assert "4/4 cases, 3 passed" in err  # the progress
    # The cases ran as executions of their own, tagged with the run; the judge's too.
    assert refund["origin"] == {"kind": "eval", "eval_run_id": v1["run_id"], "case": "refund"}
    assert (judged["agent"], judged["origin"]["judge"]) == ("grader", True)
    assert refund["tool_calls"][0]["name"] == "current_time"

    code, out, err = second
    assert code == 1, out + err  # 2 of 4 is below the threshold
    assert (v2["status"], v2["agent_version"], v2["baseline_run_id"]) == ("failed", 2, v1["run_id"])
    assert [c["case"] for c in v2["comparison"]["regressed"]] == ["greet"]
    assert v2["comparison"]["improved"] == []
    assert "regressed greet: passed before, fails now" in out

    suites = ElementTree.parse(tmp_path / "v2.xml").getroot()
    [suite] = suites.findall("testsuite")
    assert (suites.get("tests"), suites.get("failures"), suites.get("errors")) == ("4", "2", "0")
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("triage", "4", "2")
    failures = {case.get("name"): case.find("failure") for case in suite.findall("testcase")}
    assert [name for name, failure in failures.items() if failure is not None] == ["greet", "digits"]
    greet = failures["greet"]
    assert greet is not None
    assert greet.get("message") == "judge grader scored 0.1: curt"


async def test_a_run_whose_node_stops_before_it_ends_is_saved_as_an_error(tmp_path: Path) -> None:
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "slow.yml").write_text("agent: triage\ncases: [{name: slow, task_data: {prompt: hi}}]\n")
    asked, released = asyncio.Event(), asyncio.Event()

    async def slow(request: LLMRequest) -> str:
        asked.set()
        await released.wait()
        return "late"

    async with node_on("memory", tmp_path, {"triage.yml": TRIAGE.format(version="v1")}, script=slow) as node:
        run = await node.evals.start("slow")
        await asyncio.wait_for(asked.wait(), 30)
        await node.evals.stop()  # what the orchestrator role's stop does first
        stored = await node.store.eval_runs.get_eval_run(run.run_id)
        released.set()  # the case's execution ends, so the pool's drain is short

    assert (run.status, stored.status) == (EvalRunStatus.RUNNING, EvalRunStatus.ERROR)
    assert stored.error == "the node stopped before the run ended: start it again"
    assert stored.finished_at is not None
