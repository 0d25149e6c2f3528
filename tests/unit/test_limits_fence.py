"""The fence of the concurrency slots (runtime/limits.py) on the in-process store: a model
or tool call of an execution whose slot a newcomer took waits until a slot frees, counted
and logged, then goes on; the slots of an execution without limits fence nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from agentrunner.adapters.bus.memory import InMemoryEventBus
from agentrunner.adapters.cache.memory import InMemoryCache
from agentrunner.adapters.metrics.prometheus import PrometheusMetrics
from agentrunner.adapters.providers.offline import EchoProvider
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.adapters.tools.builtin import builtin_tool
from agentrunner.domain.agent import AgentConfig, ToolConfig
from agentrunner.domain.llm import LLMRequest, Message, ToolDefinition
from agentrunner.ports.tools import Repeatable, ToolContext
from agentrunner.runtime.limits import ConcurrencyLimits, HeldSlots
from agentrunner.runtime.limits_store import LimitsStore

LEASE = 0.3


def _config(**limits: Any) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "name": "a",
            "agent_type": "t",
            "execution_mode": "autonomous",
            "llm_config": {"provider": "echo", "model": "echo"},
            "limits": limits,
        }
    )


class Clock:
    """A tool whose calls say when they ran."""

    definition = ToolDefinition(name="clock", description="the time", parameters={"type": "object"})
    timeout_seconds = 30.0
    repeatable = Repeatable.ALWAYS

    def repeatable_call(self, arguments: dict[str, Any]) -> bool:
        return True

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> str:
        return str(time.monotonic())


def _lost_waits(metrics: PrometheusMetrics) -> float:
    content, _ = metrics.exposition()
    for family in text_string_to_metric_families(content.decode()):
        for sample in family.samples:
            if sample.name == "agentrunner_limits_store_waits_total" and sample.labels == {"kind": "slot_lost"}:
                return sample.value
    return 0.0


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


def _model_call(held: HeldSlots) -> Coroutine[Any, Any, object]:
    request = LLMRequest(model="echo", messages=[Message(role="user", content="hi")])
    return held.provider(EchoProvider()).complete(request)


def _tool_call(held: HeldSlots) -> Coroutine[Any, Any, object]:
    [tool] = held.tools([Clock()])
    return tool.call({}, ToolContext(agent="a", execution_id="e", session_id=None, trace_id="t"))


@pytest.mark.parametrize("call", [_model_call, _tool_call], ids=["model call", "tool call"])
async def test_a_call_of_a_holder_whose_slot_was_taken_waits_until_the_newcomer_ends(
    call: Callable[[HeldSlots], Coroutine[Any, Any, object]],
) -> None:
    cache, metrics = InMemoryCache(), PrometheusMetrics()
    store = LimitsStore(metrics=metrics)
    limits = ConcurrencyLimits(cache, provider_limits={}, lease_seconds=LEASE, store=store)
    config = _config(max_concurrency=1)
    # The starved holder: it took its slot, then renewed nothing (its process did not run).
    starved = HeldSlots(cache, store, limits.scopes(config), "starved", LEASE)
    await starved.take()

    with capture_logs() as entries:
        async with limits.held(config, "newcomer"):  # given once the starved holder's lease ran out
            waiting = asyncio.create_task(call(starved))
            await _until(lambda: _lost_waits(metrics) == 1, "the starved holder's call never waited")
            held_while_newcomer_ran = not waiting.done()
        await asyncio.wait_for(waiting, 10)  # the newcomer gave its slot back: the call goes on

    assert held_while_newcomer_ran
    messages = [entry["event"] for entry in entries]
    assert any(m.startswith("concurrency slot lost") for m in messages)
    assert any(m.startswith("execution waiting for its concurrency slots again") for m in messages)
    assert any(m.startswith("concurrency slots taken again after a loss") for m in messages)


async def test_a_holder_that_renews_passes_the_fence_and_keeps_its_slot() -> None:
    cache = InMemoryCache()
    limits = ConcurrencyLimits(cache, provider_limits={}, lease_seconds=LEASE)
    config = _config(max_concurrency=1)

    async with limits.held(config, "holder") as held:
        for _ in range(6):  # two leases of calls, renewed meanwhile
            await asyncio.wait_for(_model_call(held), 5)
            await asyncio.sleep(LEASE / 3)
        taker = await cache.acquire_slot("agent:a", "taker", 1, LEASE)

    assert taker is False


async def test_an_execution_without_limits_is_not_fenced() -> None:
    limits = ConcurrencyLimits(InMemoryCache(), provider_limits={}, lease_seconds=LEASE)
    provider, tool = EchoProvider(), Clock()

    async with limits.held(_config(), "free") as held:
        assert held.provider(provider) is provider
        assert held.tools([tool]) == [tool]


async def test_a_fenced_tool_says_whether_a_call_may_be_repeated_as_the_tool_it_fences() -> None:
    limits = ConcurrencyLimits(InMemoryCache(), provider_limits={}, lease_seconds=LEASE)
    entry = ToolConfig.model_validate({"name": "http_request", "allowed_methods": ["GET", "POST"]})
    request = builtin_tool(entry, store=SQLStateStore("sqlite+aiosqlite:///:memory:"), bus=InMemoryEventBus())
    assert request is not None

    async with limits.held(_config(max_concurrency=1), "holder") as held:
        [fenced] = held.tools([request])

    assert fenced is not request
    assert fenced.repeatable is Repeatable.PER_CALL
    assert fenced.repeatable_call({"method": "GET"})
    assert not fenced.repeatable_call({"method": "POST"})
