"""Idempotency-Key across replicas: two orchestrator processes on one PostgreSQL, a worker
on RabbitMQ. Fifty identical requests with one key, spread over both replicas at once,
make one execution; the others get its answer back; another body under that key is
refused; another caller's key is its own."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.adapters.state.urls import run_schema_command
from tests.integration.processes import role_processes
from tests.ports import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

AGENTS = {
    "once.yml": "name: once\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n",
    "listener.yml": (
        "name: listener\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"
        "event_subscriptions: ['orders.created']\n"
    ),
}
ALICE_KEY = "key-alice-0123456789abcdef0123456789"
BOB_KEY = "key-bob-0123456789abcdef0123456789ab"
KEYS = f"alice:{ALICE_KEY},bob:{BOB_KEY}"


async def _fifty(urls: list[str], body: dict[str, Any], headers: dict[str, str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as http:
        return await asyncio.gather(
            *(http.post(f"{urls[i % 2]}/agents/once/invoke", json=body, headers=headers) for i in range(50))
        )


def _executions(http: httpx.Client, url: str, agent: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    return list(http.get(f"{url}/executions", params={"agent": agent}, headers=headers).json()["items"])


def test_one_key_makes_one_execution_across_replicas_and_retries_get_its_answer(
    tmp_path: Path, postgres_url: str
) -> None:
    run_schema_command(postgres_url, "upgrade")
    (tmp_path / "agents").mkdir()
    for name, text in AGENTS.items():
        (tmp_path / "agents" / name).write_text(text)
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    alice = {"X-API-Key": ALICE_KEY, "Idempotency-Key": "order-42"}
    bob = {"Authorization": f"Bearer {BOB_KEY}", "Idempotency-Key": "order-42"}
    body = {"task_data": {"prompt": "charge the card"}, "wait": 0}
    with role_processes(tmp_path, postgres_url, ENABLE_API_AUTH="true", API_KEYS=KEYS) as roles:
        for i, port in enumerate(ports):
            roles.serve("orchestrator", log=f"orchestrator-{i}.log", ORCHESTRATOR_PORT=str(port))
        roles.serve("autonomous", "--health-port", str(free_port()), log="worker.log")
        roles.wait_ready(*urls)

        answers = asyncio.run(_fifty(urls, body, alice))
        with httpx.Client(timeout=30) as http:
            later = http.post(f"{urls[1]}/agents/once/invoke", json=body, headers=alice)
            reused = http.post(
                f"{urls[0]}/agents/once/invoke", json={**body, "task_data": {"prompt": "other"}}, headers=alice
            )
            bobs = http.post(f"{urls[0]}/agents/once/invoke", json=body, headers=bob)
            events = [
                http.post(f"{urls[i]}/events", json={"topic": "orders.created", "payload": {"n": 1}}, headers=alice)
                for i in (0, 1)
            ]
            deadline = time.monotonic() + 30
            while len(_executions(http, urls[0], "listener", alice)) < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # a second run, if the event were published twice, would show by now
            once = _executions(http, urls[0], "once", alice) + _executions(http, urls[0], "once", bob)
            listener = _executions(http, urls[1], "listener", alice)

    assert {a.status_code for a in answers} == {202}, [a.text for a in answers if a.status_code != 202]
    ids = {a.json()["execution_id"] for a in answers}
    assert len(ids) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 49
    # A retry is answered as the original was (202 for wait 0), with the execution as it stands.
    assert (later.status_code, later.headers["idempotent-replayed"]) == (202, "true")
    first = answers[0].json()
    assert {k: later.json()[k] for k in ("execution_id", "trace_id")} == {
        k: first[k] for k in ("execution_id", "trace_id")
    }
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert bobs.status_code == 202
    assert bobs.json()["execution_id"] not in ids  # another caller's key is its own
    assert sorted(e["execution_id"] for e in once) == sorted([*ids, bobs.json()["execution_id"]])
    assert [e.status_code for e in events] == [202, 202]
    assert events[0].json() == events[1].json()
    assert len(listener) == 1, listener
