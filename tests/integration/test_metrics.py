"""`/metrics` on every role: executions by agent, mode and status, their duration, tokens
and cost, retries, dead letters and schedule lateness, in Prometheus' text format; behind
the API key when auth is on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentrunner.domain.llm import LLMRequest
from agentrunner.node import Node
from tests.integration.conftest import node_on

METRICS_KEY = "k-metrics-0123456789abcdef0123456789ab"
FLAKY = (
    "name: flaky\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: scripted, model: s1}\n"
    "retry_config: {max_retries: 1, retry_delay_seconds: 0}\n"
)
TICKER = (
    "name: ticker\nagent_type: t\nexecution_mode: scheduled\nllm_config: {provider: echo, model: echo}\n"
    "schedule_config: {type: interval, interval_seconds: 1, task_data: {prompt: tick}}\n"
)
FAILURES: list[str] = []


def _reply(request: LLMRequest) -> str:
    prompt = request.messages[-1].content
    if prompt == "fail once" and prompt not in FAILURES:
        FAILURES.append(prompt)
        raise RuntimeError("first attempt fails")
    if prompt == "always fail":
        raise ValueError("never works")
    return f"ok {prompt}"


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _scrape(
    node: Node, role: Literal["state", "orchestrator", "scheduler"], headers: dict[str, str] | None = None
) -> httpx.Response:
    transport = httpx.ASGITransport(app=node.apps()[role])
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
        return await http.get("/metrics", headers=headers or {})


async def test_metrics_count_executions_retries_tokens_and_schedule_fires(tmp_path: Path) -> None:
    FAILURES.clear()
    agents = {"flaky.yml": FLAKY, "ticker.yml": TICKER}
    async with node_on("memory", tmp_path, agents, script=_reply) as node:
        invoke = node.orchestrator.invoke
        await invoke("flaky", {"prompt": "hello there"}, wait=10)
        await invoke("flaky", {"prompt": "fail once"}, wait=10)
        await invoke("flaky", {"prompt": "always fail"}, wait=10)
        for _ in range(60):  # the ticker fires every second
            scraped = await _scrape(node, "scheduler")
            if "agentrunner_schedule_lateness_seconds_count 0.0" not in scraped.text:
                break
            await asyncio.sleep(0.1)
        on_orchestrator = await _scrape(node, "orchestrator")

    samples = _samples(scraped.text)
    mode = ("mode", "autonomous")
    assert scraped.headers["content-type"].startswith("text/plain")
    succeeded = frozenset({("agent", "flaky"), mode, ("status", "succeeded")})
    failed = frozenset({("agent", "flaky"), mode, ("status", "failed")})
    assert samples[("agentrunner_executions_total", succeeded)] == 2
    assert samples[("agentrunner_executions_total", failed)] == 1
    assert samples[("agentrunner_execution_retries_total", frozenset({("agent", "flaky")}))] == 2
    assert samples[("agentrunner_execution_duration_seconds_count", frozenset({("agent", "flaky"), mode}))] == 3
    tokens_in = frozenset({("provider", "scripted"), ("model", "s1"), ("direction", "input")})
    assert samples[("agentrunner_llm_tokens_total", tokens_in)] > 0
    assert samples[("agentrunner_schedule_lateness_seconds_count", frozenset())] >= 1
    assert on_orchestrator.text.count("agentrunner_executions_total{") >= 2, "every role serves the node's metrics"


async def test_metrics_need_the_api_key_when_auth_is_on(tmp_path: Path) -> None:
    async with node_on(
        "memory", tmp_path, {"flaky.yml": FLAKY}, enable_api_auth=True, api_keys=f"metrics:{METRICS_KEY}"
    ) as node:
        refused = await _scrape(node, "state")
        allowed = await _scrape(node, "state", {"X-API-Key": METRICS_KEY})

    assert refused.status_code == 401
    assert allowed.status_code == 200
    assert "process_cpu_seconds_total" in allowed.text


@pytest.mark.parametrize("bus", ["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
async def test_queue_depth_shows_the_invocations_waiting_for_a_worker(tmp_path: Path, bus: str) -> None:
    agents = {"flaky.yml": FLAKY, "idle.yml": FLAKY.replace("name: flaky", "name: idle")}
    async with node_on(bus, tmp_path, agents, script=_reply) as node:
        await node.pool.stop(0.5)  # no worker takes them: they wait in the queue
        for number in range(3):
            await node.orchestrator.invoke("flaky", {"prompt": f"task {number}"}, wait=0)
        depths: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for _ in range(50):  # a broker counts a confirmed publish a moment later
            depths = _samples((await _scrape(node, "orchestrator")).text)
            if depths.get(("agentrunner_queue_depth", frozenset({("queue", "agent.flaky")}))) == 3:
                break
            await asyncio.sleep(0.05)
        await node.pool.start()  # the waiting invocations run now, and the queue empties
        for _ in range(100):
            after = _samples((await _scrape(node, "orchestrator")).text)
            if after[("agentrunner_queue_depth", frozenset({("queue", "agent.flaky")}))] == 0:
                break
            await asyncio.sleep(0.05)

    assert depths[("agentrunner_queue_depth", frozenset({("queue", "agent.flaky")}))] == 3
    assert depths[("agentrunner_queue_depth", frozenset({("queue", "agent.idle")}))] == 0
    assert after[("agentrunner_queue_depth", frozenset({("queue", "agent.flaky")}))] == 0
