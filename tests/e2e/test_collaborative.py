"""Collaborative agents as users run them, through the OpenAI loopback fake: the planner
answers in the vendor's tool-call format; and kill -9 of the collaborative worker between
steps (distributed: PostgreSQL, RabbitMQ), then its restart, resumes the run with no step
run twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from agentrunner.liveness import probe_tls
from agentrunner.supervisor import is_ready
from tests.contract.conftest import RABBITMQ_URL
from tests.e2e.platform import ROLES, start_platform
from tests.e2e.test_cluster import _delete_queues
from tests.fakes.openai_server import FakeOpenAI
from tests.ports import free_port

pytestmark = pytest.mark.e2e

TEAM = (
    "name: team\nagent_type: t\nexecution_mode: collaborative\nllm_config: {provider: openai, model: coordinator}\n"
    "collaborative_config: {preferred_collaborators: [step-1, step-2, step-3], max_plan_steps: 3}\n"
)
PLAN = {
    "steps": [
        {"id": "one", "agent": "step-1", "instruction": "first"},
        {"id": "two", "agent": "step-2", "instruction": "second", "inputs": ["one"]},
        {"id": "three", "agent": "step-3", "instruction": "third", "inputs": ["two"]},
    ]
}


def _agents(folder: Path, provider: str) -> None:
    folder.mkdir()
    (folder / "team.yml").write_text(TEAM)
    for index in (1, 2, 3):
        (folder / f"step-{index}.yml").write_text(
            f"name: step-{index}\nagent_type: t\nexecution_mode: autonomous\ndescription: step {index}\n"
            f"llm_config: {{provider: {provider}, model: step-{index}}}\n"
        )


def _vendor(step_seconds: float) -> FakeOpenAI:
    """Answers like OpenAI: the plan as a `submit_plan` tool call, each step slowly, the synthesis."""

    def answer(body: dict[str, Any]) -> tuple[str, tuple[str, dict[str, Any]] | None]:
        if any(tool["function"]["name"] == "submit_plan" for tool in body.get("tools", [])):
            return "", ("submit_plan", PLAN)
        if body["model"] == "coordinator":
            return "final report", None
        time.sleep(step_seconds)
        return f"{body['model']} done", None

    return FakeOpenAI(api_key="sk-collab", script=answer)


ENDED = {"succeeded", "failed", "timed_out", "cancelled"}


def _wait_for(url: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = httpx.get(url, timeout=5, verify=probe_tls())
        if response.status_code == 200:
            body = response.json()
            if body["status"] in statuses:
                return body
        time.sleep(0.1)
    raise AssertionError(f"{url} did not reach {statuses}: {body}")


def test_a_plan_from_the_vendors_tool_call_runs_through_agentrunner_up(tmp_path: Path) -> None:
    _agents(tmp_path / "agents", "echo")
    with _vendor(0.0) as fake:
        platform = start_platform(tmp_path, {"OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.base_url})
        try:
            orchestrator = platform.url("orchestrator")
            finished = httpx.post(
                f"{orchestrator}/agents/team/invoke", json={"task_data": {"prompt": "report"}}, timeout=60
            ).json()
            run = httpx.get(f"{orchestrator}/plan-runs/{finished['execution_id']}").json()
        finally:
            assert platform.stop() == 0
        planner = fake.requests[0]

    assert finished["status"] == "succeeded", finished
    assert finished["output"] == "final report"
    assert [tool["function"]["name"] for tool in planner["tools"]] == ["submit_plan"]
    assert [(step["step_id"], step["status"]) for step in run["steps"]] == [
        ("one", "succeeded"),
        ("two", "succeeded"),
        ("three", "succeeded"),
    ]
    assert run["usage"]["input_tokens"] > 0


@pytest.fixture
def distributed(tmp_path: Path, postgres_url: str) -> Iterator[dict[str, str]]:
    """The environment of a distributed deployment of this test's own (schema migrated)."""
    prefix = f"test-{uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update({f"{role.upper()}_PORT": str(free_port()) for role in ROLES})
    env.update(
        {
            "AGENTS_DIR": str(tmp_path / "agents"),
            "DATA_DIR": str(tmp_path / "data"),
            "DATABASE_URL": postgres_url,
            "RABBITMQ_URL": RABBITMQ_URL,
            "RABBITMQ_EXCHANGE_PREFIX": prefix,
            "COLLABORATIVE_POLL_SECONDS": "0.5",
        }
    )
    migrated = subprocess.run(
        [sys.executable, "-m", "agentrunner", "db", "upgrade"], env=env, capture_output=True, timeout=120, check=False
    )
    assert migrated.returncode == 0, migrated.stderr
    yield env
    asyncio.run(_delete_queues(prefix))


def _serve(env: dict[str, str], log: Path, *roles: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        command = [sys.executable, "-m", "agentrunner", "serve", *roles, "--health-port", str(free_port())]
        if "slack" in roles:
            command.append("--slack-optional")  # no Slack app in this test: the other roles serve
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_kill_9_of_the_collaborative_worker_between_steps_resumes_without_running_a_step_twice(
    tmp_path: Path, distributed: dict[str, str]
) -> None:
    _agents(tmp_path / "agents", "openai")
    log = tmp_path / "roles.log"
    with _vendor(1.5) as fake:
        env = {**distributed, "OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.base_url}
        rest = _serve(env, log, *ROLES, "autonomous")
        worker = _serve(env, log, "collaborative")
        orchestrator = f"http://127.0.0.1:{env['ORCHESTRATOR_PORT']}"
        try:
            _wait_for_ready(orchestrator, log)
            time.sleep(1.0)  # the collaborative worker consumes its queue
            accepted = httpx.post(
                f"{orchestrator}/agents/team/invoke", json={"task_data": {"prompt": "go"}, "wait": 0}, timeout=10
            ).json()
            run_url = f"{orchestrator}/plan-runs/{accepted['execution_id']}"
            deadline = time.monotonic() + 60
            while not any(request["model"] == "step-2" for request in list(fake.requests)):  # step one is done
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                assert worker.poll() is None, log.read_text()[-3000:]
                time.sleep(0.02)
            worker.send_signal(signal.SIGKILL)
            assert worker.wait(10) == -signal.SIGKILL
            before = httpx.get(run_url).json()
            time.sleep(2.0)  # step two ends while no collaborative worker runs
            worker = _serve(env, log, "collaborative")
            run = _wait_for(run_url, {"succeeded", "failed"}, timeout=90)
            # The run's end and its execution's end are two saves: wait for the second too.
            execution = _wait_for(f"{orchestrator}/executions/{accepted['execution_id']}", ENDED)
        finally:
            for process in (worker, rest):
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in (worker, rest):
                try:
                    process.wait(40)
                except subprocess.TimeoutExpired:
                    process.kill()
        calls = Counter(request["model"] for request in fake.requests)

    assert [(s["step_id"], s["status"]) for s in before["steps"]] == [
        ("one", "succeeded"),
        ("two", "running"),
        ("three", "pending"),
    ]
    assert run["status"] == "succeeded", json.dumps(run)[-2000:]
    assert run["result"] == "final report"
    assert [(s["step_id"], s["output"], s["attempts"]) for s in run["steps"]] == [
        ("one", "step-1 done", 1),
        ("two", "step-2 done", 1),
        ("three", "step-3 done", 1),
    ]
    assert calls == Counter({"coordinator": 2, "step-1": 1, "step-2": 1, "step-3": 1})
    assert execution["status"] == "succeeded"
    assert execution["output"] == "final report"


def _wait_for_ready(orchestrator: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_ready(orchestrator):
            return
        time.sleep(0.1)
    raise AssertionError(f"the orchestrator did not come up:\n{log.read_text()[-3000:]}")


def test_kill_9_of_agentrunner_up_mid_run_resumes_the_run_after_the_restart(tmp_path: Path) -> None:
    _agents(tmp_path / "agents", "openai")
    with _vendor(1.5) as fake:
        env = {"OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.base_url, "COLLABORATIVE_POLL_SECONDS": "0.5"}
        first = start_platform(tmp_path, env)
        try:
            accepted = httpx.post(
                f"{first.url('orchestrator')}/agents/team/invoke", json={"task_data": {"prompt": "go"}, "wait": 0}
            ).json()
            deadline = time.monotonic() + 60
            while not any(request["model"] == "step-2" for request in list(fake.requests)):
                assert time.monotonic() < deadline, first.log_path.read_text()[-3000:]
                time.sleep(0.02)
            first.process.send_signal(signal.SIGKILL)
            assert first.process.wait(10) == -signal.SIGKILL
        finally:
            first.stop()
        second = start_platform(tmp_path, env)
        try:
            orchestrator = second.url("orchestrator")
            run = _wait_for(f"{orchestrator}/plan-runs/{accepted['execution_id']}", {"succeeded", "failed"}, 90)
        finally:
            assert second.stop() == 0
        calls = Counter(request["model"] for request in fake.requests)

    assert run["status"] == "succeeded", json.dumps(run)[-2000:]
    assert [(s["step_id"], s["status"], s["attempts"]) for s in run["steps"]] == [
        ("one", "succeeded", 1),
        ("two", "succeeded", 1),
        ("three", "succeeded", 1),
    ]
    # Step one had finished: never run again. Step two was cut short with the process: its
    # one execution runs again (a second model call), not a second execution.
    assert (calls["step-1"], calls["step-2"], calls["step-3"]) == (1, 2, 1)
