"""A plan run pinned to its versions across processes (issue 24): the config role, the
orchestrator, and a worker (the collaborative pool and the autonomous one), each a process
of its own on PostgreSQL and RabbitMQ. A run started on v1 of its agent and of its steps' agents, held for
approval while every file changes to v2 (and every process has applied the change), finishes
on v1: its steps' executions and its synthesis ask v1's models, while new work takes v2."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.adapters.state.urls import run_schema_command
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.processes import RoleProcesses, role_processes, wait_finished
from tests.ports import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

PLAN = {
    "steps": [
        {"id": "one", "agent": "step-1", "instruction": "first"},
        {"id": "two", "agent": "step-2", "instruction": "second", "inputs": ["one"]},
    ]
}
# A deadline, not a speed: the config role debounces file changes, then every process reloads.
RELOAD_SECONDS = 30.0


def _team(version: str) -> str:
    return (
        "name: team\nagent_type: t\nexecution_mode: collaborative\n"
        f"llm_config: {{provider: openai, model: coordinator-{version}}}\n"
        "collaborative_config: {preferred_collaborators: [step-1, step-2], max_plan_steps: 2,"
        " require_plan_approval: true}\n"
    )


def _step(index: int, version: str) -> str:
    return (
        f"name: step-{index}\nagent_type: t\nexecution_mode: autonomous\ndescription: step {index}\n"
        f"llm_config: {{provider: openai, model: step-{index}-{version}}}\n"
    )


def _files(agents: Path, version: str) -> None:
    (agents / "team.yml").write_text(_team(version))
    for index in (1, 2):
        (agents / f"step-{index}.yml").write_text(_step(index, version))


def _answer(body: dict[str, Any]) -> tuple[str, tuple[str, dict[str, Any]] | None]:
    """The vendor's models: the planner submits PLAN; every other answer names its model."""
    if any(tool["function"]["name"] == "submit_plan" for tool in body.get("tools", [])):
        return "", ("submit_plan", PLAN)
    return f"answered by {body['model']}", None


@dataclass
class Deployment:
    roles: RoleProcesses
    agents: Path
    orchestrator: str
    fake: FakeOpenAI


@pytest.fixture
def deployment(tmp_path: Path, postgres_url: str) -> Iterator[Deployment]:
    run_schema_command(postgres_url, "upgrade")
    agents = tmp_path / "agents"
    agents.mkdir()
    _files(agents, "v1")
    with FakeOpenAI(script=_answer) as fake:
        ports = {role: free_port() for role in ("config", "orchestrator", "worker")}
        env = {
            "CONFIG_PORT": str(ports["config"]),
            "ORCHESTRATOR_PORT": str(ports["orchestrator"]),
            "OPENAI_API_KEY": fake.api_key,
            "OPENAI_BASE_URL": fake.base_url,
            "COLLABORATIVE_POLL_SECONDS": "0.2",
            "LOG_LEVEL": "INFO",  # "agents reloaded": each process says when it applied the edit
        }
        with role_processes(tmp_path, postgres_url, **env) as roles:
            roles.serve("config", log="config.log")
            roles.serve("orchestrator", log="orchestrator.log")
            # One worker process for both pools: a process fewer to start on a loaded machine.
            roles.serve("collaborative", "autonomous", "--health-port", str(ports["worker"]), log="worker.log")
            roles.wait_ready(*(f"http://127.0.0.1:{port}" for port in ports.values()))
            time.sleep(0.5)  # the config role's file watcher is armed
            yield Deployment(roles, agents, f"http://127.0.0.1:{ports['orchestrator']}", fake)


def _until(check: Any, what: str, seconds: float = RELOAD_SECONDS) -> Any:
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return result


def test_a_plan_run_started_on_v1_finishes_on_v1_with_its_steps_after_the_files_change(
    deployment: Deployment,
) -> None:
    logs = deployment.roles.logs
    with httpx.Client(base_url=deployment.orchestrator, timeout=30) as http:
        run_id = http.post("/agents/team/invoke", json={"task_data": {"prompt": "report"}, "wait": 0}).json()[
            "execution_id"
        ]
        held = _until(
            lambda: (run := http.get(f"/plan-runs/{run_id}").json()).get("status") == "awaiting_approval" and run,
            "the plan was not held for approval",
        )
        _files(deployment.agents, "v2")
        for role in ("orchestrator", "worker"):
            _until(lambda role=role: "agents reloaded" in (logs / f"{role}.log").read_text(), f"{role} not reloaded")
        fresh = _until(
            lambda: (
                (body := http.post("/agents/step-1/invoke", json={"task_data": {"prompt": "new"}}).json())[
                    "agent_version"
                ]
                == 2
                and body
            ),
            "new work did not take v2",
        )
        approved = http.post(f"/plan-runs/{run_id}/approve", json={})
        [finished] = wait_finished(http, [run_id])
        run = http.get(f"/plan-runs/{run_id}").json()
        steps = wait_finished(http, [step["execution_id"] for step in run["steps"]])

    assert [(step["agent"], step["agent_version"]) for step in held["steps"]] == [("step-1", 1), ("step-2", 1)]
    assert approved.status_code == 200, approved.text
    assert (finished["status"], finished["agent_version"]) == ("succeeded", 1), finished
    assert finished["output"] == "answered by coordinator-v1"
    assert [(step["agent_version"], step["output"]) for step in steps] == [
        (1, "answered by step-1-v1"),
        (1, "answered by step-2-v1"),
    ]
    assert (fresh["status"], fresh["output"]) == ("succeeded", "answered by step-1-v2")
    asked = [request["model"] for request in deployment.fake.requests]
    assert [model for model in asked if model.endswith("-v2")] == ["step-1-v2"]  # the fresh invocation alone
