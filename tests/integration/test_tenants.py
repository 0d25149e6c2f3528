"""Tenants are API keys: each key's work is limited on its own (TENANT_MAX_CONCURRENCY,
TENANT_BUDGET_USD) across worker processes, on PostgreSQL, RabbitMQ and Redis, and every
execution says which tenant started it."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest

from agentrunner.adapters.state.urls import run_schema_command
from tests.contract.conftest import REDIS_URL
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.processes import role_processes, wait_finished
from tests.integration.test_limits import _most_at_once, past_the_fresh_store_grace
from tests.ports import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.redis]

ALICE_KEY = "key-alice-0123456789abcdef0123456789"
BOB_KEY = "key-bob-0123456789abcdef0123456789ab"

AGENT = "name: shared\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: openai, model: gpt-4o}\n"
# Long enough that a worker starved of CPU for a second or two (a loaded machine) still
# renews in time: a slot lost would let a tenant's second execution start beside its first.
LEASE_SECONDS = 5.0

LISTENER = (
    "name: orders\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: openai, model: gpt-4o}\n"
    "event_subscriptions: ['orders.#']\n"
)


async def _burst(url: str, key: str, count: int) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=30, headers={"X-API-Key": key}) as http:
        answers = await asyncio.gather(
            *(
                http.post("/agents/shared/invoke", json={"task_data": {"prompt": f"{key} {i}"}, "wait": 0})
                for i in range(count)
            )
        )
    return [str(a.json()["execution_id"]) for a in answers]


def test_each_tenant_has_its_own_concurrency_and_budget(tmp_path: Path, postgres_url: str) -> None:
    run_schema_command(postgres_url, "upgrade")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "shared.yml").write_text(AGENT)
    (tmp_path / "agents" / "orders.yml").write_text(LISTENER)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    prefix = f"tenants-{uuid.uuid4().hex[:8]}:"
    with FakeOpenAI(api_key="sk-tenants") as fake:
        fake.slow(0.3)
        env = {
            "ORCHESTRATOR_PORT": str(port),
            "OPENAI_API_KEY": fake.api_key,
            "OPENAI_BASE_URL": fake.base_url,
            "REDIS_URL": REDIS_URL,
            "REDIS_KEY_PREFIX": prefix,
            "SLOT_LEASE_SECONDS": f"{LEASE_SECONDS:g}",
            "ENABLE_API_AUTH": "true",
            "API_KEYS": f"alice:{ALICE_KEY},bob:{BOB_KEY}",
            "TENANT_MAX_CONCURRENCY": "1",
            "TENANT_BUDGET_USD": "0.0002",  # 3 of these calls (gpt-4o prices), not 2
        }
        with role_processes(tmp_path, postgres_url, **env) as roles:
            roles.serve("orchestrator", log="o.log")
            health = [free_port() for _ in range(2)]
            for index, health_port in enumerate(health):
                roles.serve("autonomous", "--health-port", str(health_port), log=f"w{index}.log")
            asyncio.run(past_the_fresh_store_grace(REDIS_URL, prefix, LEASE_SECONDS))
            roles.wait_ready(url, *(f"http://127.0.0.1:{health_port}" for health_port in health))

            async def both() -> tuple[list[str], list[str]]:
                alice, bob = await asyncio.gather(_burst(url, ALICE_KEY, 4), _burst(url, BOB_KEY, 2))
                return alice, bob

            alice_ids, bob_ids = asyncio.run(both())
            with httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": ALICE_KEY}) as http:
                alice = wait_finished(http, alice_ids)
                with httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": BOB_KEY}) as as_bob:
                    bob = wait_finished(as_bob, bob_ids)  # a tenant reads its own executions only
                time.sleep(1.1)  # the spend each process read is at most a second old
                refused = http.post("/agents/shared/invoke", json={"task_data": {"prompt": "more"}, "wait": 0})
                bob_again = http.post(
                    "/agents/shared/invoke",
                    json={"task_data": {"prompt": "bob"}, "wait": 0},
                    headers={"X-API-Key": BOB_KEY},
                )
                # An event a tenant publishes starts runs that count as that tenant's.
                http.post("/events", json={"topic": "orders.created", "payload": {"prompt": "ship"}})
                deadline = time.monotonic() + 30
                while not (started := http.get("/executions", params={"agent": "orders"}).json()["items"]):
                    assert time.monotonic() < deadline, "the event started nothing"
                    time.sleep(0.1)
                by_event = wait_finished(http, [started[0]["execution_id"]])[0]

    assert [r["status"] for r in alice + bob] == ["succeeded"] * 6
    assert {r["tenant"] for r in alice} == {"alice"}
    assert {r["tenant"] for r in bob} == {"bob"}
    assert _most_at_once(alice) == 1
    assert _most_at_once(bob) == 1
    assert _most_at_once(alice + bob) == 2  # the tenants do not wait for each other
    assert sum(r["cost_usd"] for r in alice) > 0.0002 > sum(r["cost_usd"] for r in bob)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert "tenant 'alice' spent" in refused.json()["error"]["message"]
    assert "TENANT_BUDGET_USD" in refused.json()["error"]["message"]
    assert bob_again.status_code == 202  # alice's spend is not bob's
    assert by_event["tenant"] == "alice"
    assert (by_event["status"], by_event["error"]["code"]) == ("failed", "budget_exceeded")
