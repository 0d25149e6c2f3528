"""A continuous agent whose turn hangs past its timeout (a tool that swallows
cancellation) is found by the consumer heartbeat, its consumer restarted and the message
run again; a consumer that stays stuck is given up after its restarts: the agent is
marked unavailable and the stuck execution failed. On both buses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentrunner.domain.errors import AgentUnavailableError
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.llm import LLMRequest
from agentrunner.node import Node
from tests.integration.conftest import BUSES, node_on

AGENT = """
name: stubborn
agent_type: support
execution_mode: continuous
llm_config: {provider: scripted, model: s, max_attempts: 1}
timeout_seconds: TIMEOUT
retry_config: {max_retries: 0}
"""
HEARTBEAT = 1.2  # seconds: the watchdog looks every 0.2 s
# The turn's timeout: long enough that a busy machine still reaches the model call before
# it (timed out before the call, the turn would end `timed_out`, hanging nothing).
TIMEOUT = 1.0


class Stubborn:
    """A model call that ignores cancellation for its first `hangs` calls, then answers."""

    def __init__(self, hangs: int) -> None:
        self.hangs = hangs
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self, request: LLMRequest) -> str:
        self.calls += 1
        if self.calls <= self.hangs:
            while not self.release.is_set():
                try:
                    await self.release.wait()
                except asyncio.CancelledError:  # the bug being survived: cancellation swallowed
                    continue
        return f"answered: {request.messages[-1].content}"


async def _node(bus: str, tmp_path: Path, script: Stubborn) -> AsyncIterator[Node]:
    async with node_on(
        bus,
        tmp_path,
        {"stubborn.yml": AGENT.replace("TIMEOUT", str(TIMEOUT))},
        script=script,
        consumer_heartbeat_timeout_seconds=HEARTBEAT,
        consumer_max_restarts=2,
    ) as node:
        try:
            yield node
        finally:
            script.release.set()  # let the abandoned calls end with the test


async def _ended(node: Node, execution_id: str, within: float) -> Execution:
    async def ended() -> Execution:
        while not (current := await node.store.executions.get_execution(execution_id)).status.is_terminal:
            await asyncio.sleep(0.05)
        return current

    return await asyncio.wait_for(ended(), within)


@pytest.mark.parametrize("bus", BUSES)
async def test_a_hung_turn_is_found_and_its_consumer_restarted_then_the_message_runs_again(
    bus: str, tmp_path: Path
) -> None:
    script = Stubborn(hangs=1)
    async for node in _node(bus, tmp_path, script):
        accepted = await node.orchestrator.invoke("stubborn", {"prompt": "hello"}, session_id="s1")
        started = asyncio.get_running_loop().time()
        finished = await _ended(node, accepted.execution_id, within=15)
        took = asyncio.get_running_loop().time() - started
        state = await node.store.sessions.load_state("stubborn", "s1")
        available = node.registry.runnable("stubborn")

    assert finished.status is ExecutionStatus.SUCCEEDED
    assert finished.output == "answered: hello"
    assert finished.attempts == 2, "the redelivered message is a second attempt"
    assert script.calls == 2
    assert took < TIMEOUT + HEARTBEAT + 3, "found within the heartbeat timeout of overrunning"
    assert [m["content"] for m in state.history] == ["hello", "answered: hello"]
    assert available.name == "stubborn"


@pytest.mark.parametrize("bus", BUSES)
async def test_a_consumer_stuck_after_every_restart_is_given_up_and_its_execution_failed(
    bus: str, tmp_path: Path
) -> None:
    script = Stubborn(hangs=100)
    async for node in _node(bus, tmp_path, script):
        accepted = await node.orchestrator.invoke("stubborn", {"prompt": "hello"}, session_id="s1")
        finished = await _ended(node, accepted.execution_id, within=20)
        with pytest.raises(AgentUnavailableError, match="restarts") as refused:
            await node.orchestrator.invoke("stubborn", {"prompt": "again"})

    assert finished.status is ExecutionStatus.FAILED
    assert finished.error is not None
    assert finished.error.code == "consumer_unresponsive"
    assert script.calls == 3, "the first run and 2 restarts, then given up"
    assert "stopped answering" in refused.value.message
