"""The steps of a plan run are pinned to their agents' versions (issue 24): each step runs
on the version of its agent loaded when the plan was made, even when the agent's file
changes before the step starts; a step an approver adds to the plan joins on the version
loaded at the approval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentrunner.domain.plan import PlanRunStatus
from tests.integration.conftest import node_on
from tests.integration.test_collaborative import FAST, Team, _client, _plan_call, _run_in, _team, _worker

TWO_STEPS: dict[str, list[dict[str, Any]]] = {
    "steps": [
        {"id": "facts", "agent": "researcher", "instruction": "find the facts"},
        {"id": "final", "agent": "editor", "instruction": "edit", "inputs": ["facts"]},
    ]
}


def _on_model(name: str, model: str) -> str:
    """Agent `name` whose scripted model is `model`: the step's output names the version it ran."""
    return _worker(name, f"{name} of the team").replace(f"model: {name}}}", f"model: {model}}}")


async def test_steps_run_on_the_versions_their_plan_was_made_with_after_their_files_change(tmp_path: Path) -> None:
    team = Team([_plan_call(TWO_STEPS)])
    agents = {
        "team.yml": _team(require_plan_approval=True, preferred_collaborators=["researcher", "editor", "writer"]),
        **{f"{name}.yml": _on_model(name, f"{name}-v1") for name in ("researcher", "editor", "writer")},
    }
    async with node_on("memory", tmp_path, agents, script=team, **FAST) as node, _client(node) as http:
        run_id = (await http.post("/agents/team/invoke", json={"task_data": {"prompt": "x"}, "wait": 0})).json()[
            "execution_id"
        ]
        held = await _run_in(http, run_id, PlanRunStatus.AWAITING_APPROVAL)
        for name in ("researcher", "editor", "writer"):
            (tmp_path / "agents" / f"{name}.yml").write_text(_on_model(name, f"{name}-v2"))
        await node.reload_agents()
        # The approver keeps `facts` and swaps the editor's step for a writer's: the editor is
        # gone, the researcher stays on the plan's version, the writer joins on today's.
        edited = {
            "steps": [
                TWO_STEPS["steps"][0],
                {"id": "draft", "agent": "writer", "instruction": "draft", "inputs": ["facts"]},
            ]
        }
        approved = await http.post(f"/plan-runs/{run_id}/approve", json={"plan": edited})
        done = await _run_in(http, run_id, PlanRunStatus.SUCCEEDED, PlanRunStatus.FAILED)
        executions = {step.step_id: (await http.get(f"/executions/{step.execution_id}")).json() for step in done.steps}
        fresh = (await http.post("/agents/researcher/invoke", json={"task_data": {"prompt": "y"}})).json()

    assert [(step.agent, step.agent_version) for step in held.steps] == [("researcher", 1), ("editor", 1)]
    assert approved.status_code == 200, approved.text
    assert done.status is PlanRunStatus.SUCCEEDED, done.error
    assert [(step.step_id, step.agent_version) for step in done.steps] == [("facts", 1), ("draft", 2)]
    assert {step_id: (e["agent_version"], e["output"]) for step_id, e in executions.items()} == {
        "facts": (1, "researcher-v1 done"),
        "draft": (2, "writer-v2 done"),
    }
    assert (fresh["agent_version"], fresh["output"]) == (2, "researcher-v2 done")
