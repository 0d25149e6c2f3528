"""A plan run is pinned to the version of its agent it started on (issue 24), on a real
`agentrunner up`: started on v1 and waiting for its plan's approval when the agent file
changes to v2, it finishes on v1 (its synthesis asks v1's model), while the platform lists
both versions and new work takes v2."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.platform import start_platform
from tests.e2e.test_collaborative import PLAN, _wait_for
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.e2e

ENDED = {"succeeded", "failed", "timed_out", "cancelled"}


def _team(model: str) -> str:
    return (
        "name: team\nagent_type: t\nexecution_mode: collaborative\n"
        f"llm_config: {{provider: openai, model: {model}}}\n"
        "collaborative_config: {preferred_collaborators: [step-1, step-2, step-3], max_plan_steps: 3,"
        " require_plan_approval: true}\n"
    )


def _answer(body: dict[str, Any]) -> tuple[str, tuple[str, dict[str, Any]] | None]:
    if any(tool["function"]["name"] == "submit_plan" for tool in body.get("tools", [])):
        return "", ("submit_plan", PLAN)
    return f"answered by {body['model']}", None


def test_a_plan_run_started_on_v1_finishes_on_v1_after_the_file_changes_to_v2(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "team.yml").write_text(_team("coordinator-v1"))
    for index in (1, 2, 3):
        (agents / f"step-{index}.yml").write_text(
            f"name: step-{index}\nagent_type: t\nexecution_mode: autonomous\ndescription: step {index}\n"
            "llm_config: {provider: echo, model: echo}\n"
        )
    with FakeOpenAI(api_key="sk-pinned", script=_answer) as fake:
        platform = start_platform(tmp_path, {"OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.base_url})
        try:
            orchestrator = platform.url("orchestrator")
            accepted = httpx.post(
                f"{orchestrator}/agents/team/invoke", json={"task_data": {"prompt": "report"}, "wait": 0}, timeout=30
            ).json()
            run_url = f"{orchestrator}/plan-runs/{accepted['execution_id']}"
            _wait_for(run_url, {"awaiting_approval"})

            (agents / "team.yml").write_text(_team("coordinator-v2"))
            deadline = time.monotonic() + 60
            while len(httpx.get(f"{orchestrator}/agents/team/versions", timeout=5).json()) < 2:
                assert time.monotonic() < deadline, "the edit was not recorded as version 2"
                time.sleep(0.1)

            approved = httpx.post(f"{run_url}/approve", json={}, timeout=30)
            finished = _wait_for(f"{orchestrator}/executions/{accepted['execution_id']}", ENDED)
            versions = httpx.get(f"{orchestrator}/agents/team/versions/2", timeout=5).json()
        finally:
            assert platform.stop() == 0
        models = [request["model"] for request in fake.requests]

    assert approved.status_code in (200, 202), approved.text
    assert finished["status"] == "succeeded", finished
    assert finished["agent_version"] == 1
    assert finished["output"] == "answered by coordinator-v1"
    assert "coordinator-v2" not in models  # nothing of the run asked the new version's model
    assert [change["field"] for change in versions["changes"]] == ["llm_config.model"]
