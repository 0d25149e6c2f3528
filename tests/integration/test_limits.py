"""Guardrails on real processes (orchestrator and three autonomous workers on PostgreSQL,
RabbitMQ and Redis; the model is the OpenAI loopback fake): limits.max_concurrency holds
across the workers and nothing waits forever; a worker killed holding a slot frees it
within SLOT_LEASE_SECONDS; the limit holds while Redis does not answer (work waits, then
runs) and after Redis restarts without its data (the running holders come back first); a
spent budget refuses the next invocation with the figures while the one in flight
finishes, warns at 80 %, and shows in GET /usage."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.adapters.state.urls import run_schema_command
from tests.conftest import free_port
from tests.contract.conftest import REDIS_URL
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.private_redis import PrivateRedis, private_redis
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


LEASE_SECONDS = 2.0
# On a private Redis the test breaks: a longer lease, so that a worker starved of CPU for a
# second or two (a loaded machine) still renews in time (see runtime/limits.py).
OUTAGE_LEASE_SECONDS = 5.0


@dataclass
class Deployment:
    url: str
    fake: FakeOpenAI
    workers: list[subprocess.Popen[bytes]]
    health: list[str]
    roles: Any


@contextmanager
def _deployed(tmp_path: Path, postgres_url: str, redis_url: str, prefix: str, lease: float) -> Iterator[Deployment]:
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
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": prefix,
            "SLOT_LEASE_SECONDS": f"{lease:g}",
        }
        with role_processes(tmp_path, postgres_url, **env) as roles:
            roles.serve("orchestrator", log="o.log")
            health = [f"http://127.0.0.1:{free_port()}" for _ in range(3)]
            workers = [
                roles.serve("autonomous", "--health-port", url.rsplit(":", 1)[1], log=f"w{index}.log")
                for index, url in enumerate(health)
            ]
            roles.wait_ready(f"http://127.0.0.1:{port}", *health)
            yield Deployment(f"http://127.0.0.1:{port}", fake, workers, health, roles)


@pytest.fixture
def deployment(tmp_path: Path, postgres_url: str) -> Iterator[Deployment]:
    with _deployed(tmp_path, postgres_url, REDIS_URL, f"limits-{uuid.uuid4().hex[:8]}:", LEASE_SECONDS) as deployed:
        yield deployed


@dataclass
class OnPrivateRedis:
    deployment: Deployment
    redis: PrivateRedis


@pytest.fixture
def on_private_redis(tmp_path: Path, postgres_url: str) -> Iterator[OnPrivateRedis]:
    """The deployment on a Redis of the test's own, which the test pauses or kills."""
    with (
        private_redis(tmp_path / "redis") as redis,
        _deployed(tmp_path, postgres_url, redis.url, "limits:", OUTAGE_LEASE_SECONDS) as deployed,
    ):
        yield OnPrivateRedis(deployed, redis)


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


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _running(http: httpx.Client, ids: list[str]) -> int:
    return sum(http.get(f"/executions/{i}").json()["status"] == "running" for i in ids)


def _limits_check(health: str) -> tuple[int, str]:
    answer = httpx.get(f"{health}/health/ready", timeout=5)
    return answer.status_code, str(answer.json()["checks"].get("limits"))


def _started_between(records: list[dict[str, Any]], begin: datetime, end: datetime) -> list[str]:
    return [r["execution_id"] for r in records if begin < datetime.fromisoformat(r["started_at"]) < end]


def test_work_waits_for_a_redis_that_does_not_answer_and_then_runs_within_the_limit(
    on_private_redis: OnPrivateRedis,
) -> None:
    deployment, redis = on_private_redis.deployment, on_private_redis.redis
    deployment.fake.slow(2.0)
    with httpx.Client(base_url=deployment.url, timeout=30) as http:
        ids = [_invoke(http, "limited", f"task {i}").json()["execution_id"] for i in range(6)]
        _wait_for(lambda: _running(http, ids) == 2, "two executions never ran")
        redis.pause()
        paused_at, paused_wall = time.monotonic(), datetime.now(UTC)
        answers: list[tuple[int, str]] = []
        metrics: list[str] = []
        try:
            # Longer than a lease (it must not run out while nobody reaches Redis), and until
            # a worker says its limits wait (asserted below), for 20 s at most.
            while (elapsed := time.monotonic() - paused_at) < 1.5 * OUTAGE_LEASE_SECONDS or (
                not answers and elapsed < 20
            ):
                # Takers wait (and say so on /health/ready, still 200) instead of running unlimited.
                checks = [_limits_check(h) for h in deployment.health]
                if not answers and any(limits.startswith("waiting: cache unavailable") for _, limits in checks):
                    answers = checks
                    metrics = [httpx.get(f"{h}/metrics", timeout=5).text for h in deployment.health]
                time.sleep(0.05)
        finally:
            redis.resume()
        resumed_wall = datetime.now(UTC)
        records = wait_finished(http, ids, timeout=90)
        recovered = [_limits_check(h) for h in deployment.health]

    assert [r["status"] for r in records] == ["succeeded"] * 6
    assert _most_at_once(records) == 2
    assert _started_between(records, paused_wall + timedelta(seconds=0.5), resumed_wall) == []
    assert {code for code, _ in answers} == {200}
    assert any(limits.startswith("waiting: cache unavailable") for _, limits in answers)
    assert any("agentrunner_limits_store_unavailable 1.0" in text for text in metrics)
    assert any('agentrunner_limits_store_waits_total{kind="slot"}' in text for text in metrics)
    assert recovered == [(200, "ok")] * 3
    log = deployment.roles.log_text()
    assert "limits waiting" in log
    assert "concurrency limits not enforced" not in log


def test_running_holders_come_back_before_new_ones_after_redis_restarts_without_its_data(
    on_private_redis: OnPrivateRedis,
) -> None:
    deployment, redis = on_private_redis.deployment, on_private_redis.redis
    deployment.fake.slow(OUTAGE_LEASE_SECONDS)  # each run spans the restart and a renewal after it
    with httpx.Client(base_url=deployment.url, timeout=30) as http:
        ids = [_invoke(http, "limited", f"task {i}").json()["execution_id"] for i in range(4)]
        _wait_for(lambda: _running(http, ids) == 2, "two executions never ran")
        redis.kill()  # every slot is lost; the waiting takers ask again at once
        redis.start()
        records = wait_finished(http, ids, timeout=90)

    assert [r["status"] for r in records] == ["succeeded"] * 4
    assert _most_at_once(records) == 2
    assert "concurrency slot added back" in deployment.roles.log_text()


def test_a_worker_killed_holding_a_slot_frees_it_within_the_lease(deployment: Deployment) -> None:
    deployment.fake.slow(10.0)  # still running when its worker dies, however slow the machine
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
        assert http.get(f"/executions/{first}").json()["status"] == "running"
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
