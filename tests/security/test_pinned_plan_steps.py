"""The version a plan step runs on is the platform's, never the approver's (issue 24): an
edited plan sent to `POST /plan-runs/{id}/approve` that names versions for its steps (an old
one, one that does not exist, a hostile value) runs each step on the version pinned when
the plan was made, or, for an agent the edit adds, the version loaded at the approval."""

from __future__ import annotations

from pathlib import Path

from agentrunner.domain.plan import PlanRunStatus
from tests.integration.conftest import node_on
from tests.integration.test_collaborative import FAST, Team, _client, _plan_call, _run_in, _team
from tests.integration.test_plan_step_versions import TWO_STEPS, _on_model


async def test_an_edited_plan_cannot_choose_the_versions_its_steps_run_on(tmp_path: Path) -> None:
    agents = {
        "team.yml": _team(require_plan_approval=True, preferred_collaborators=["researcher", "editor", "writer"]),
        **{f"{name}.yml": _on_model(name, f"{name}-v1") for name in ("researcher", "editor", "writer")},
    }
    team = Team([_plan_call(TWO_STEPS)])
    async with node_on("memory", tmp_path, agents, script=team, **FAST) as node, _client(node) as http:
        run_id = (await http.post("/agents/team/invoke", json={"task_data": {"prompt": "x"}, "wait": 0})).json()[
            "execution_id"
        ]
        await _run_in(http, run_id, PlanRunStatus.AWAITING_APPROVAL)
        for name in ("researcher", "writer"):
            (tmp_path / "agents" / f"{name}.yml").write_text(_on_model(name, f"{name}-v2"))
        await node.reload_agents()
        edited = {
            "steps": [
                {**TWO_STEPS["steps"][0], "agent_version": 2},
                {"id": "draft", "agent": "writer", "instruction": "draft", "agent_version": 1},
                {"id": "more", "agent": "writer", "instruction": "again", "agent_version": "1; drop"},
                {"id": "huge", "agent": "researcher", "instruction": "x", "agent_version": 2**80},
            ]
        }
        approved = await http.post(f"/plan-runs/{run_id}/approve", json={"plan": edited})
        done = await _run_in(http, run_id, PlanRunStatus.SUCCEEDED, PlanRunStatus.FAILED)
        ran = {s.step_id: (await http.get(f"/executions/{s.execution_id}")).json() for s in done.steps}

    assert approved.status_code == 200, approved.text
    pinned = {"facts": 1, "draft": 2, "more": 2, "huge": 1}
    assert {step.step_id: step.agent_version for step in done.steps} == pinned
    assert {step_id: execution["agent_version"] for step_id, execution in ran.items()} == pinned
    assert ran["facts"]["output"] == "researcher-v1 done"
