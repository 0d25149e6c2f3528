"""A second message to a continuous session whose first is still running follows the
agent's `continuous_config.on_busy`: enqueue (wait behind it), reject (409
session_busy), interrupt (cancel it, keep its message in the history) or rollback (cancel
it, no trace of it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentrunner.domain.errors import SessionBusyError
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.llm import LLMRequest
from agentrunner.node import Node
from agentrunner.settings import Settings

POLICIES = ("enqueue", "reject", "interrupt", "rollback")


class Model:
    """Answers at once, except a prompt starting with 'slow', which waits for `release`."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen: dict[str, list[str]] = {}

    async def reply(self, request: LLMRequest) -> str:
        said = [m.content for m in request.messages if m.role in ("user", "assistant")]
        self.seen[said[-1]] = said[:-1]
        if said[-1].startswith("slow"):
            await self.release.wait()
        return f"answer to {said[-1]}"


def _node(tmp_path: Path, model: Model) -> Node:
    agents = tmp_path / "agents"
    agents.mkdir(exist_ok=True)
    for policy in POLICIES:
        (agents / f"{policy}.yml").write_text(
            f"name: chat-{policy}\nagent_type: t\nexecution_mode: continuous\n"
            f"llm_config: {{provider: scripted, model: s}}\ncontinuous_config: {{on_busy: {policy}}}\n"
        )
    settings = Settings(_env_file=None, agents_dir=agents, data_dir=tmp_path)
    return Node(settings, script=model.reply, slack_optional=True)


async def _running(node: Node, agent: str, prompt: str) -> Execution:
    execution = await node.orchestrator.invoke(agent, {"prompt": prompt}, session_id="s1", wait=0)
    async with asyncio.timeout(10):
        while (execution := await node.orchestrator.execution(execution.execution_id)).status is ExecutionStatus.QUEUED:
            await asyncio.sleep(0.01)
    return execution


async def _history(node: Node, agent: str) -> list[str]:
    return [str(m["content"]) for m in (await node.store.sessions.load_state(agent, "s1")).history]


async def test_enqueue_runs_the_second_message_after_the_first(tmp_path: Path) -> None:
    model = Model()
    node = _node(tmp_path, model)
    async with node.running():
        first = await _running(node, "chat-enqueue", "slow first")
        second = await node.orchestrator.invoke("chat-enqueue", {"prompt": "second"}, session_id="s1", wait=0.3)
        model.release.set()
        done = await node.orchestrator.invoke("chat-enqueue", {"prompt": "third"}, session_id="s1", wait=10)
        history = await _history(node, "chat-enqueue")
        statuses = [(await node.orchestrator.execution(e.execution_id)).status for e in (first, second)]

    assert second.status is ExecutionStatus.QUEUED  # waited behind the first
    assert statuses == [ExecutionStatus.SUCCEEDED, ExecutionStatus.SUCCEEDED]
    assert done.status is ExecutionStatus.SUCCEEDED
    assert history[:4] == ["slow first", "answer to slow first", "second", "answer to second"]


async def test_reject_refuses_a_second_message_while_the_first_runs(tmp_path: Path) -> None:
    model = Model()
    node = _node(tmp_path, model)
    async with node.running():
        first = await _running(node, "chat-reject", "slow first")
        with pytest.raises(SessionBusyError, match="still answering") as refused:
            await node.orchestrator.invoke("chat-reject", {"prompt": "second"}, session_id="s1", wait=0)
        other = await node.orchestrator.invoke("chat-reject", {"prompt": "hi"}, session_id="s2", wait=0)
        model.release.set()
        async with asyncio.timeout(10):
            while not (finished := await node.orchestrator.execution(first.execution_id)).status.is_terminal:
                await asyncio.sleep(0.01)
        after = await node.orchestrator.invoke("chat-reject", {"prompt": "later"}, session_id="s1", wait=10)
        other = await node.orchestrator.execution(other.execution_id)

    assert refused.value.context["busy"] == [first.execution_id]
    assert other.status is ExecutionStatus.SUCCEEDED  # another session is not refused
    assert finished.status is ExecutionStatus.SUCCEEDED
    assert after.status is ExecutionStatus.SUCCEEDED


@pytest.mark.parametrize(("policy", "kept"), [("interrupt", True), ("rollback", False)])
async def test_interrupt_and_rollback_cancel_the_running_message(tmp_path: Path, policy: str, kept: bool) -> None:
    model = Model()
    node = _node(tmp_path, model)
    agent = f"chat-{policy}"
    async with node.running():
        first = await _running(node, agent, "slow first")
        second = await node.orchestrator.invoke(agent, {"prompt": "second"}, session_id="s1", wait=10)
        cancelled = await node.orchestrator.execution(first.execution_id)
        history = await _history(node, agent)

    assert cancelled.status is ExecutionStatus.CANCELLED
    assert cancelled.error is not None
    assert f"on_busy: {policy}" in cancelled.error.message
    assert second.status is ExecutionStatus.SUCCEEDED
    if kept:  # the interrupted question stays in the history, without an answer
        assert history == ["slow first", "second", "answer to second"]
        assert model.seen["second"] == ["slow first"]
    else:
        assert history == ["second", "answer to second"]
        assert model.seen["second"] == []
