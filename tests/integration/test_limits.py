"""Guardrails on real processes (orchestrator and three autonomous workers on PostgreSQL,
RabbitMQ and Redis; the model is the OpenAI loopback fake): limits.max_concurrency holds
across the workers and nothing waits forever; a worker killed holding a slot frees it
within SLOT_LEASE_SECONDS; a spent budget refuses the next invocation with the figures
while the one in flight finishes, warns at 80 %, and shows in GET /usage."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.adapters.state.urls import run_schema_command
from tests.conftest import free_port
from tests.contract.conftest import REDIS_URL
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.processes import role_processes, wait_finished

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.redis]

LIMITED = (
    "name: limited\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: openai, model: gpt-4o}\n"
    "limits: {max_concurrency: 2}\n"
)
SINGLE = (
    "name: single\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: openai, model: gpt-4o}\n"
    "limits: {max_concurrency: 1}\nretry_config: {max_retries: 0}\n"
)
# gpt-4o: $2.50 / $10 per million tokens; the fake answers 'prompt' words as tokens.
BUDGETED = (
    "name: budgeted\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: openai, model: gpt-4o}\n"
    "limits: {budget_usd: 0.0001, budget_period: day}\n"
)
LISTENER = (
    "name: budget-watch\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"
    "event_subscriptions: ['budget.warning.#']\n"
)


@dataclass
class Deployment:
    url: str
    fake: FakeOpenAI
    workers: list[subprocess.Popen[bytes]]
    roles: Any


@pytest.fixture
def deployment(tmp_path: Path, postgres_url: str) -> Iterator[Deployment]:
    run_schema_command(postgres_url, "upgrade")
    agents = tmp_path / "agents"
    agents.mkdir()
    for name, text in {"limited": LIMITED, "single": SINGLE, "budgeted": BUDGETED, "watch": LISTENER}.items():
        (agents / f"{name}.yml").write_text(text)
    port = free_port()
    with FakeOpenAI(api_key="sk-limits") as fake:
        env = {
            "ORCHESTRATOR_PORT": str(port),
            "OPENAI_API_KEY": fake.api_key,
            "OPENAI_BASE_URL": fake.base_url,
            "REDIS_URL": REDIS_URL,
            "REDIS_KEY_PREFIX": f"limits-{uuid.uuid4().hex[:8]}:",
            "SLOT_LEASE_SECONDS": "2",
        }
        with role_processes(tmp_path, postgres_url, **env) as roles:
            roles.serve("orchestrator", log="o.log")
            workers = roles.serve_workers(3, ready=(f"http://127.0.0.1:{port}",))
            yield Deployment(f"http://127.0.0.1:{port}", fake, workers, roles)


def _invoke(http: httpx.Client, agent: str, prompt: str) -> httpx.Response:
    return http.post(f"/agents/{agent}/invoke", json={"task_data": {"prompt": prompt}, "wait": 0})


def _most_at_once(records: list[dict[str, Any]]) -> int:
    edges = []
    for r in records:
        edges += [(datetime.fromisoformat(r["started_at"]), 1), (datetime.fromisoformat(r["finished_at"]), -1)]
    running = most = 0
    for _, step in sorted(edges):
        running += step
        most = max(most, running)
    return most


def test_max_concurrency_holds_across_three_workers_and_every_task_runs(deployment: Deployment) -> None:
    deployment.fake.slow(0.3)
    with httpx.Client(base_url=deployment.url, timeout=30) as http:
        ids = [_invoke(http, "limited", f"task {i}").json()["execution_id"] for i in range(12)]
        records = wait_finished(http, ids)

    assert [r["status"] for r in records] == ["succeeded"] * 12
    assert _most_at_once(records) == 2
    assert len({r["worker"] for r in records}) >= 2  # the limit is shared, not per worker


def test_a_worker_killed_holding_a_slot_frees_it_within_the_lease(deployment: Deployment) -> None:
    deployment.fake.slow(3.0)
    with httpx.Client(base_url=deployment.url, timeout=30) as http:
        first = _invoke(http, "single", "held").json()["execution_id"]
        deadline = time.monotonic() + 20
        while http.get(f"/executions/{first}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        health = free_port()  # the worker that takes over, up before the others die
        deployment.roles.serve("autonomous", "--health-port", str(health), log="late.log")
        deployment.roles.wait_ready(f"http://127.0.0.1:{health}")
        deployment.fake.slow(0.1)
        for worker in deployment.workers:  # the one holding the slot among them
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        killed_at, killed_wall = time.monotonic(), datetime.now(UTC)
        second = _invoke(http, "single", "next").json()["execution_id"]
        records = wait_finished(http, [first, second], timeout=60)
        took = time.monotonic() - killed_at

    assert [r["status"] for r in records] == ["succeeded", "succeeded"]
    # The dead worker's slot stayed taken until its lease (2 s, renewed every 2/3 s) ran out,
    # then freed: the next execution started after that, and nothing waited forever.
    second_started = datetime.fromisoformat(records[1]["started_at"])
    assert (second_started - killed_wall).total_seconds() >= 1.2, (second_started, killed_wall)
    assert took < 20, took


def test_a_spent_budget_refuses_the_next_invocation_and_warns_once(deployment: Deployment) -> None:
    words = " ".join(["word"] * 30)  # 30+ tokens in, as many out: ~$0.0004 > the $0.0001 budget
    body = {"task_data": {"prompt": words}, "wait": 30}
    keyed = {"Idempotency-Key": "charge-once"}
    deployment.fake.slow(1.0)
    with httpx.Client(base_url=deployment.url, timeout=30) as http, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(http.post, "/agents/budgeted/invoke", json=body, headers=keyed)
        time.sleep(0.3)
        # A retry while the original runs waits for it as the original does, and is not run.
        while_running = http.post("/agents/budgeted/invoke", json=body, headers=keyed)
        first = pending.result().json()
        deployment.fake.slow(0.0)
        refused = _invoke(http, "budgeted", "one more")
        # A retry of the accepted invocation is answered with it, not refused by the budget it spent.
        retried = http.post("/agents/budgeted/invoke", json=body, headers=keyed)
        deadline = time.monotonic() + 20
        while not http.get("/executions", params={"agent": "budget-watch"}).json()["items"]:
            assert time.monotonic() < deadline, "no budget warning ran its subscriber"
            time.sleep(0.1)
        warned = http.get("/executions", params={"agent": "budget-watch"}).json()["items"]
        state = free_port()
        deployment.roles.serve("state", log="state.log", STATE_PORT=str(state))
        deployment.roles.wait_ready(f"http://127.0.0.1:{state}")
        usage = httpx.get(f"http://127.0.0.1:{state}/usage", params={"agent": "budgeted"}, timeout=30).json()

    assert first["status"] == "succeeded"
    assert first["cost_usd"] > 0.0001
    for retry in (while_running, retried):
        assert (retry.status_code, retry.headers["idempotent-replayed"]) == (200, "true")
        assert retry.json()["execution_id"] == first["execution_id"]
        assert retry.json()["status"] == "succeeded"
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert "of its $0.0001 daily budget" in error["message"]
    assert "resets at" in error["message"]
    assert len(warned) == 1
    assert warned[0]["input"]["agent"] == "budgeted"
    assert warned[0]["input"]["percent"] >= 80
    [budget] = usage["budgets"]
    assert (budget["agent"], budget["period"], budget["limit_usd"]) == ("budgeted", "day", 0.0001)
    assert budget["spent_usd"] == pytest.approx(first["cost_usd"])
    assert budget["resets_at"] > budget["period_start"]
