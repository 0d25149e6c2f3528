"""Guardrails on real processes (orchestrator and three autonomous workers on PostgreSQL,
RabbitMQ and Redis; the model is the OpenAI loopback fake): limits.max_concurrency holds
across the workers and nothing waits forever; a worker killed holding a slot frees it
within SLOT_LEASE_SECONDS; a worker stopped (starved) past its lease loses its slot to a
newcomer and its execution's next model call waits for a slot again; the limit holds while
Redis does not answer (work waits, then runs) and after Redis restarts without its data
(the running holders come back first); a spent budget refuses the next invocation with the
figures while the one in flight finishes, warns at 80 %, and shows in GET /usage."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
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

from agentrunner.adapters.cache.redis import RedisCache
from agentrunner.adapters.state.urls import run_schema_command
from tests.conftest import PostgresDatabases, _database_url, _drop_database
from tests.contract.conftest import REDIS_URL
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.timed_calls import TimedCalls, peak
from tests.integration.private_redis import PrivateRedis, private_redis
from tests.integration.processes import role_processes, wait_finished
from tests.ports import free_port

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
FENCED = (
    "name: fenced\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: openai, model: gpt-4o}\n"
    "limits: {max_concurrency: 1}\nretry_config: {max_retries: 0}\n"
)
LISTENER = (
    "name: budget-watch\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"
    "event_subscriptions: ['budget.warning.#']\n"
)


LEASE_SECONDS = 2.0
# On a private Redis the test breaks: a longer lease, so that a worker starved of CPU for a
# second or two (a loaded machine) still renews in time (see runtime/limits.py).
OUTAGE_LEASE_SECONDS = 5.0
# How long after Redis stopped answering a slot taken just before may still be recorded as
# a start (the worker's write of the start comes after its slot).
STARTED_LATE_SECONDS = 5.0


@dataclass
class Deployment:
    url: str
    fake: FakeOpenAI
    workers: list[subprocess.Popen[bytes]]
    health: list[str]
    roles: Any


@contextmanager
def _deployed(
    tmp_path: Path, postgres_url: str, redis_url: str, prefix: str, lease: float, *, workers: int = 3, **more: str
) -> Iterator[Deployment]:
    run_schema_command(postgres_url, "upgrade")
    agents = tmp_path / "agents"
    agents.mkdir()
    files = {"limited": LIMITED, "single": SINGLE, "budgeted": BUDGETED, "watch": LISTENER, "fenced": FENCED}
    for name, text in files.items():
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
            **more,
        }
        with role_processes(tmp_path, postgres_url, **env) as roles:
            roles.serve("orchestrator", log="o.log")
            health = [f"http://127.0.0.1:{free_port()}" for _ in range(workers)]
            processes = [
                roles.serve("autonomous", "--health-port", url.rsplit(":", 1)[1], log=f"w{index}.log")
                for index, url in enumerate(health)
            ]
            asyncio.run(past_the_fresh_store_grace(redis_url, prefix, lease))
            roles.wait_ready(f"http://127.0.0.1:{port}", *health)
            yield Deployment(f"http://127.0.0.1:{port}", fake, processes, health, roles)


async def past_the_fresh_store_grace(redis_url: str, prefix: str, lease: float) -> None:
    """Until the slots under `prefix` give a first slot: a fresh store refuses new holders
    for one lease (runtime/limits.py), spent here while the roles start rather than by the
    test's first execution. The tests measure a store in use, as a deployment's is after
    its first lease; a Redis that loses its data mid-test still starts a grace of its own.
    Taken every sixth of a lease: the store's clock counts a silent stretch as half a lease
    at most, so it moves only while it is called."""
    store = RedisCache(redis_url, key_prefix=prefix)
    deadline = time.monotonic() + 30
    try:
        while not await store.acquire_slot("fresh-grace", "tests", 1, lease):
            assert time.monotonic() < deadline, "the fresh store never gave a slot"
            await asyncio.sleep(lease / 6)
        await store.release_slot("fresh-grace", "tests")
    finally:
        await store.close()


@pytest.fixture
def own_deployment(tmp_path: Path, postgres_url: str) -> Iterator[Deployment]:
    """A deployment of the test's own, whose processes it may kill."""
    with _deployed(tmp_path, postgres_url, REDIS_URL, f"limits-{uuid.uuid4().hex[:8]}:", LEASE_SECONDS) as deployed:
        yield deployed


@pytest.fixture(scope="module")
def module_deployment(
    tmp_path_factory: pytest.TempPathFactory, postgres_databases: PostgresDatabases
) -> Iterator[Deployment]:
    database = postgres_databases.take().result()
    try:
        with _deployed(
            tmp_path_factory.mktemp("limits"),
            _database_url(database),
            REDIS_URL,
            f"limits-{uuid.uuid4().hex[:8]}:",
            LEASE_SECONDS,
        ) as deployed:
            yield deployed
    finally:
        asyncio.run(_drop_database(database))


@pytest.fixture
def deployment(module_deployment: Deployment) -> Deployment:
    """One deployment for the tests that neither kill nor stop its processes (starting four
    is the slow part), with the fake's answers as new: each test invokes agents that no other
    test of the module invokes, and looks at their executions only."""
    fake = module_deployment.fake
    fake.script, fake.delay_seconds = None, 0.0
    return module_deployment


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
    """The most executions `running` at once, from their recorded start and finish (which a
    starved worker's execution waiting for its slot again may exceed: see tests/fakes/timed_calls.py)."""
    return peak([(_at(r["started_at"]), _at(r["finished_at"])) for r in records])


def _at(moment: str) -> float:
    return datetime.fromisoformat(moment).timestamp()


def test_max_concurrency_holds_across_three_workers_and_every_task_runs(deployment: Deployment) -> None:
    calls = TimedCalls(deployment.fake, 0.3)
    with httpx.Client(base_url=deployment.url, timeout=30) as http:
        ids = [_invoke(http, "limited", f"task {i}").json()["execution_id"] for i in range(12)]
        records = wait_finished(http, ids)

    assert [r["status"] for r in records] == ["succeeded"] * 12
    assert len(calls.spans) == 12
    assert peak(calls.spans) <= 2  # two model calls at once at most (on a loaded machine, maybe fewer)
    assert _most_at_once(records) >= 2  # two executions held a slot at once: the limit is two, not one
    assert len({r["worker"] for r in records}) >= 2  # the limit is shared, not per worker


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


class ModelCalls:
    """The fake's script for the `fenced` agent: records each model call's span (when it
    reached the vendor, when it was answered) by who made it, and holds the calls named in
    `held` until the test lets them go. The holder's first call is answered with a call of
    a tool it does not have, so the agent loop asks the model again: its second call."""

    NAMES = ("holder-1", "holder-2", "newcomer")

    def __init__(self, *, held: set[str]) -> None:
        self.spans: dict[str, tuple[float, float]] = {}
        self.arrived = {name: threading.Event() for name in self.NAMES}
        self.go = {name: threading.Event() for name in self.NAMES}
        self._held = held

    def __call__(self, body: dict[str, Any]) -> tuple[str, tuple[str, dict[str, Any]] | None]:
        messages = body["messages"]
        if "newcomer" in json.dumps(messages):
            name = "newcomer"
        else:
            name = "holder-2" if any(m.get("role") == "tool" for m in messages) else "holder-1"
        started = time.monotonic()
        self.arrived[name].set()
        if name in self._held:
            assert self.go[name].wait(90), f"{name}'s model call was never let go"
        self.spans[name] = (started, time.monotonic())
        return ("done", ("not_a_tool", {})) if name == "holder-1" else ("done", None)


WAITING_AGAIN = "execution waiting for its concurrency slots again before its next model or tool call"


def _stopped(process: subprocess.Popen[bytes]) -> bool:
    stat = Path(f"/proc/{process.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def test_a_holder_starved_past_its_lease_waits_for_a_slot_before_its_next_model_call(
    tmp_path: Path, postgres_url: str
) -> None:
    # One worker first, holding one message at a time (prefetch 1): the newcomer goes to the
    # second worker, started later, while the first has the holder's execution in hand.
    calls = ModelCalls(held={"holder-1", "newcomer"})
    prefix = f"limits-{uuid.uuid4().hex[:8]}:"
    with (
        _deployed(
            tmp_path, postgres_url, REDIS_URL, prefix, LEASE_SECONDS, workers=1, RABBITMQ_PREFETCH_COUNT="1"
        ) as deployment,
        httpx.Client(base_url=deployment.url, timeout=30) as http,
    ):
        deployment.fake.script = calls
        [starved] = deployment.workers
        holder = _invoke(http, "fenced", "holder").json()["execution_id"]
        assert calls.arrived["holder-1"].wait(30), "the holder's first model call never came"
        health = free_port()
        deployment.roles.serve("autonomous", "--health-port", str(health), log="w-newcomer.log")
        deployment.roles.wait_ready(f"http://127.0.0.1:{health}")
        starved.send_signal(signal.SIGSTOP)  # starved of CPU: it renews nothing, its lease runs out
        try:
            _wait_for(lambda: _stopped(starved), "the holder's worker never stopped")
            calls.go["holder-1"].set()  # answered while its worker is stopped: the answer waits in its socket
            newcomer = _invoke(http, "fenced", "newcomer").json()["execution_id"]
            assert calls.arrived["newcomer"].wait(30), "the newcomer never got the slot of the stopped holder"
        finally:
            starved.send_signal(signal.SIGCONT)
        # The holder goes on; without the fence its next model call would go out now, beside
        # the newcomer's (held by the fake): the limit of one exceeded.
        _wait_for(
            lambda: calls.arrived["holder-2"].is_set() or WAITING_AGAIN in deployment.roles.log_text(),
            "the resumed holder neither called the model again nor waited for its slot",
        )
        calls.go["newcomer"].set()
        records = wait_finished(http, [holder, newcomer], timeout=60)
        log = deployment.roles.log_text()

    assert [r["status"] for r in records] == ["succeeded", "succeeded"]
    assert set(calls.spans) == set(ModelCalls.NAMES)
    assert peak(list(calls.spans.values())) == 1
    assert calls.spans["holder-2"][0] >= calls.spans["newcomer"][1]  # it waited for the newcomer's slot
    assert "concurrency slot lost" in log
    assert WAITING_AGAIN in log
    assert "concurrency slots taken again after a loss" in log


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
    calls = TimedCalls(deployment.fake, 2.0)
    with httpx.Client(base_url=deployment.url, timeout=30) as http:
        ids = [_invoke(http, "limited", f"task {i}").json()["execution_id"] for i in range(6)]
        _wait_for(lambda: _running(http, ids) == 2, "two executions never ran")
        redis.pause()
        paused_at, paused_wall = time.monotonic(), datetime.now(UTC)
        answers: list[tuple[int, str]] = []
        metrics: list[str] = []
        try:
            # Twice a lease (it must not run out while nobody reaches Redis), and until a
            # worker says its limits wait (asserted below), for 20 s at most.
            while (elapsed := time.monotonic() - paused_at) < 2 * OUTAGE_LEASE_SECONDS or (
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
    assert peak(calls.spans) == 2
    # A taker answered just before the pause records its start after it: seconds later on a
    # machine loaded by a parallel suite (seen past 2 s). Past that, nothing starts until Redis
    # answers again.
    late = _started_between(records, paused_wall + timedelta(seconds=STARTED_LATE_SECONDS), resumed_wall)
    assert late == [], (paused_wall, resumed_wall, [r for r in records if r["execution_id"] in late])
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
    calls = TimedCalls(deployment.fake, OUTAGE_LEASE_SECONDS)  # each call spans the restart and a renewal after it
    with httpx.Client(base_url=deployment.url, timeout=30) as http:
        ids = [_invoke(http, "limited", f"task {i}").json()["execution_id"] for i in range(4)]
        _wait_for(lambda: _running(http, ids) == 2, "two executions never ran")
        redis.kill()  # every slot is lost; the waiting takers ask again at once
        redis.start()
        records = wait_finished(http, ids, timeout=90)

    assert [r["status"] for r in records] == ["succeeded"] * 4
    assert peak(calls.spans) == 2
    assert "concurrency slot added back" in deployment.roles.log_text()


def test_a_worker_killed_holding_a_slot_frees_it_within_the_lease(own_deployment: Deployment) -> None:
    deployment = own_deployment
    # Still running when its worker dies, however slow the machine: starting the worker that
    # takes over once took more than 10 s on a busy CI host (the fake's threads are daemons:
    # the held answer does not hold the teardown).
    deployment.fake.slow(60.0)
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
