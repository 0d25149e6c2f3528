"""A chain through a collaborative agent ends at CHAIN_MAX_DEPTH, for the tenant that
started it (issue 21: both pools build "the execution for this event" with one builder).

`alpha` (autonomous) runs for a tenant; `beta` (collaborative) is subscribed to alpha's
output and plans one step: alpha again. That step's output is alpha's output once more, so
the chain loops alpha -> beta -> alpha -> beta ... and must stop at the depth limit, each
run counting for the tenant, each of beta's runs with beta's own webhook URL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution
from agentrunner.domain.llm import Completion, LLMRequest, ToolCall
from agentrunner.node import Node
from agentrunner.runtime.topics import CHAIN_DEPTH_HEADER, output_topic
from agentrunner.tracing import as_tenant
from tests.integration.conftest import node_on

MAX_DEPTH = 2
HOOK = "https://hooks.example.com/beta"
ALPHA = (
    "name: alpha\nagent_type: t\nexecution_mode: autonomous\ndescription: does it again\n"
    "llm_config: {provider: scripted, model: alpha}\n"
)
BETA = (
    "name: beta\nagent_type: t\nexecution_mode: collaborative\ndescription: the team\n"
    "llm_config: {provider: scripted, model: coordinator}\n"
    'collaborative_config: {"preferred_collaborators": ["alpha"], "max_plan_steps": 1}\n'
    f"event_subscriptions: [agent.output.alpha]\nwebhook_url: {HOOK}\n"
)
PLAN = {"steps": [{"id": "again", "agent": "alpha", "instruction": "once more"}]}


async def _models(request: LLMRequest) -> str | Completion:
    if any(tool.name == "submit_plan" for tool in request.tools):
        return Completion(text="", tool_calls=[ToolCall(id="p", name="submit_plan", arguments=PLAN)])
    return f"{request.model} done"


async def test_a_loop_through_a_collaborative_agent_stops_at_the_depth_limit_for_its_tenant(
    platform: tuple[str, str], tmp_path: Path
) -> None:
    bus, database_url = platform
    outputs: list[Event] = []

    async def heard(event: Event) -> None:
        outputs.append(event)

    agents = {"alpha.yml": ALPHA, "beta.yml": BETA}
    fast = {"collaborative_poll_seconds": 0.2, "clarification_sweep_seconds": 0.2}
    async with node_on(
        bus, tmp_path, agents, script=_models, database_url=database_url, chain_max_depth=MAX_DEPTH, **fast
    ) as node:
        probe = await node.bus.subscribe(f"probe-{uuid4().hex[:12]}", [output_topic("alpha")], heard, exclusive=True)
        with as_tenant("team-a"):
            await node.orchestrator.invoke("alpha", {"prompt": "go"}, wait=20)
        betas = await _until(lambda: _finished(node, "beta", MAX_DEPTH))
        alphas = await _until(lambda: _finished(node, "alpha", MAX_DEPTH + 1))
        assert [e.chain_depth for e in betas] == [1, 2], "each run of beta is one link deeper"
        assert [e.chain_depth for e in alphas] == [0, 1, 2], "a step goes on from its run's depth"
        # The output one link past the limit is published (beta's queue has it too) ...
        await _until(lambda: _deeper_than(outputs, MAX_DEPTH))
        # ... and beta does not run for it: room for a run too many, which would show here.
        too_many = await _within(1.0, lambda: _finished(node, "beta", MAX_DEPTH + 1))
        await probe.cancel(0.0)

    assert too_many is None, "the chain stops at CHAIN_MAX_DEPTH"
    assert {e.tenant for e in [*alphas, *betas]} == {"team-a"}, "every link counts for the tenant"
    assert {e.webhook_url for e in betas} == {HOOK}, "an event-started run keeps its agent's webhook_url"


async def _deeper_than(events: list[Event], depth: int) -> bool:
    return any(int(event.headers.get(CHAIN_DEPTH_HEADER, "0")) > depth for event in events)


async def _finished(node: Node, agent: str, count: int) -> list[Execution] | None:
    """`count` or more terminal executions of `agent`, by chain depth; None until then."""
    page = await node.store.queries.list_executions(agent=agent, limit=20)
    done = sorted((e for e in page.items if e.status.is_terminal), key=lambda e: e.chain_depth)
    return done if len(done) >= count else None


async def _until(check: Callable[[], Awaitable[Any]], timeout: float = 60) -> Any:
    async def poll() -> Any:
        while not (result := await check()):
            await asyncio.sleep(0.05)
        return result

    return await asyncio.wait_for(poll(), timeout)


async def _within(seconds: float, check: Callable[[], Awaitable[Any]]) -> Any:
    """What `check` finds within `seconds`, or None: for what must not happen."""
    try:
        return await _until(check, timeout=seconds)
    except TimeoutError:
        return None
