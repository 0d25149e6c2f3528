"""Rate limits on real processes (an orchestrator and two autonomous workers on
PostgreSQL, RabbitMQ and Redis; the model is the OpenAI loopback fake): an agent's
requests_per_minute paces its model calls across both workers; a vendor's 429 pauses the
calls of every worker for its Retry-After, not just the one that got it; while Redis does
not answer, calls wait for it (an execution whose timeout runs out meanwhile says so)
rather than go through unlimited."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.adapters.state.urls import run_schema_command
from tests.contract.conftest import REDIS_URL
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.private_redis import private_redis
from tests.integration.processes import role_processes, wait_finished
from tests.ports import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.redis]

OPENAI = "agent_type: t\nexecution_mode: autonomous\nllm_config: {provider: openai, model: gpt-4o}\n"


@dataclass
class Arrivals:
    """When each answered model call reached the fake (monotonic), by prompt."""

    times: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, body: dict[str, Any]) -> tuple[str, None]:
        prompt = str(body["messages"][-1]["content"])
        with self.lock:
            self.times.setdefault(prompt, time.monotonic())
        return f"done: {prompt}", None


@dataclass
class Deployment:
    url: str
    fake: FakeOpenAI
    arrivals: Arrivals


@contextmanager
def _deployed(tmp_path: Path, postgres_url: str, redis_url: str, prefix: str, workers: int) -> Iterator[Deployment]:
    run_schema_command(postgres_url, "upgrade")
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "paced.yml").write_text(f"name: paced\n{OPENAI}limits: {{requests_per_minute: 120}}\n")
    (agents / "plain.yml").write_text(f"name: plain\n{OPENAI}")
    (agents / "hasty.yml").write_text(
        f"name: hasty\n{OPENAI}timeout_seconds: 3\nlimits: {{requests_per_minute: 600}}\n"
    )
    arrivals = Arrivals()
    port = free_port()
    with FakeOpenAI(api_key="sk-rates", script=arrivals.script) as fake:
        env = {
            "ORCHESTRATOR_PORT": str(port),
            "OPENAI_API_KEY": fake.api_key,
            "OPENAI_BASE_URL": fake.base_url,
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": prefix,
            "PROVIDER_REQUESTS_PER_MINUTE": "openai=600",
            "LLM_RETRY_BASE_SECONDS": "0.05",
        }
        with role_processes(tmp_path, postgres_url, **env) as roles:
            roles.serve("orchestrator", log="o.log")
            roles.serve_workers(workers, ready=(f"http://127.0.0.1:{port}",))
            yield Deployment(f"http://127.0.0.1:{port}", fake, arrivals)


@pytest.fixture
def deployment(tmp_path: Path, postgres_url: str) -> Iterator[Deployment]:
    with _deployed(tmp_path, postgres_url, REDIS_URL, f"rates-{uuid.uuid4().hex[:8]}:", workers=2) as deployed:
        yield deployed


def _submit(http: httpx.Client, agent: str, prompt: str) -> str:
    answer = http.post(f"/agents/{agent}/invoke", json={"task_data": {"prompt": prompt}, "wait": 0})
    return str(answer.json()["execution_id"])


def test_requests_per_minute_paces_an_agents_calls_across_workers(deployment: Deployment) -> None:
    prompts = [f"paced {i}" for i in range(8)]
    with httpx.Client(base_url=deployment.url, timeout=30) as http:
        # Each worker's first call loads the vendor's SDK (a second on a loaded machine),
        # which would hold the first paced calls back from the vendor past later ones:
        # unlimited calls first, two to each worker (the broker deals them out in turn).
        wait_finished(http, [_submit(http, "plain", f"warm-up {i}") for i in range(4)])
        records = wait_finished(http, [_submit(http, "paced", p) for p in prompts])

    arrived = sorted(deployment.arrivals.times[p] for p in prompts)
    assert [r["status"] for r in records] == ["succeeded"] * 8
    # 2 a second with at most a second's worth at once: 8 calls are let go over 3 s. Seen at
    # the vendor, the first calls may come later after their slot than the last (0.32 s in
    # a CI run with the suite spread over three processes; about a second when they loaded
    # the SDK too): 2.5 s, where twice the burst would make 2 s and no limit a fraction of one.
    assert arrived[-1] - arrived[0] >= 2.5, [round(t - arrived[0], 2) for t in arrived]


def test_a_vendors_429_pauses_every_workers_calls_for_its_retry_after(deployment: Deployment) -> None:
    deployment.fake.fail_with(429)  # the next call is refused with Retry-After: 1
    with httpx.Client(base_url=deployment.url, timeout=30) as http:
        began = time.monotonic()
        refused = _submit(http, "plain", "refused")
        time.sleep(0.3)  # the 429 has been answered: the bucket is in debt
        bystander = _submit(http, "plain", "bystander")
        records = wait_finished(http, [refused, bystander])

    assert [r["status"] for r in records] == ["succeeded", "succeeded"]
    # Without the feedback the bystander's call would have arrived ~0.3 s in.
    assert deployment.arrivals.times["bystander"] - began >= 0.9


def test_calls_wait_while_the_bucket_store_is_down_and_time_out_saying_so(tmp_path: Path, postgres_url: str) -> None:
    with (
        private_redis(tmp_path / "redis") as redis,
        _deployed(tmp_path, postgres_url, redis.url, "rates:", workers=1) as deployment,
        httpx.Client(base_url=deployment.url, timeout=30) as http,
    ):
        redis.kill()
        hasty = _submit(http, "hasty", "hasty")  # timeout_seconds: 3
        patient = _submit(http, "paced", "patient")  # the default timeout_seconds
        [timed_out] = wait_finished(http, [hasty])
        waiting = http.get(f"/executions/{patient}").json()["status"]
        arrived_while_down = dict(deployment.arrivals.times)
        redis.start()
        restarted = time.monotonic()
        [finished] = wait_finished(http, [patient])

    assert timed_out["status"] == "timed_out", timed_out  # not succeeded: no call went through unlimited
    assert timed_out["error"]["code"] == "timed_out"
    assert "did not answer within 3 s" in timed_out["error"]["message"]
    assert "waiting for the rate limiter's store, which did not answer" in timed_out["error"]["message"]
    assert waiting in ("queued", "running")  # its call waits for the store, within its timeout
    assert arrived_while_down == {}  # no call went through unlimited
    assert finished["status"] == "succeeded"
    assert deployment.arrivals.times["patient"] >= restarted
    assert "hasty" not in deployment.arrivals.times
