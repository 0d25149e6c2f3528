"""Continuous agents keep a conversation per session: each turn sees the history, sessions
are apart, the history is bounded, and it survives a restart of the node."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agentrunner.domain.errors import StateNotFoundError
from agentrunner.domain.execution import ExecutionStatus
from agentrunner.domain.llm import LLMRequest
from agentrunner.domain.slack import slack_origin
from agentrunner.node import Node
from agentrunner.settings import Settings

AGENT = """
name: chat
agent_type: support
execution_mode: continuous
llm_config: {provider: scripted, model: s}
system_prompt: Be kind.
continuous_config: {max_conversation_history: 4}
"""


def _reply(request: LLMRequest) -> str:
    # What the model saw: how many earlier messages, and the last thing the user said.
    earlier = [m.content for m in request.messages if m.role in ("user", "assistant")][:-1]
    return f"{len(earlier)} before; you said {request.messages[-1].content}"


def _node(tmp_path: Path) -> Node:
    (tmp_path / "agents").mkdir(exist_ok=True)
    (tmp_path / "agents" / "chat.yml").write_text(AGENT)
    return Node(Settings(_env_file=None, agents_dir=tmp_path / "agents", data_dir=tmp_path), script=_reply)


async def test_a_session_remembers_its_turns_and_sessions_are_apart(tmp_path: Path) -> None:
    node = _node(tmp_path)
    async with node.running():
        invoke = node.orchestrator.invoke
        first = await invoke("chat", {"prompt": "hi"}, session_id="alice", wait=10)
        second = await invoke("chat", {"prompt": "my order is late"}, session_id="alice", wait=10)
        other = await invoke("chat", {"prompt": "hello"}, session_id="bob", wait=10)
        third = await invoke("chat", {"prompt": "thanks"}, session_id="alice", wait=10)
        state = await node.store.sessions.load_state("chat", "alice")

    assert first.status is ExecutionStatus.SUCCEEDED
    assert first.output == "0 before; you said hi"
    assert second.output == "2 before; you said my order is late"
    assert other.output == "0 before; you said hello"
    assert third.output == "4 before; you said thanks"
    assert [m["content"] for m in state.history] == [
        "my order is late",
        "2 before; you said my order is late",
        "thanks",
        "4 before; you said thanks",
    ], "bounded to max_conversation_history, oldest dropped"


async def test_a_session_takes_a_new_version_at_its_next_message_and_keeps_its_history(tmp_path: Path) -> None:
    def answer(request: LLMRequest) -> str:  # the system prompt names the version that answered
        return f"{_reply(request)} ({request.messages[0].content})"

    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "chat.yml").write_text(AGENT)
    node = Node(Settings(_env_file=None, agents_dir=tmp_path / "agents", data_dir=tmp_path), script=answer)
    async with node.running():
        first = await node.orchestrator.invoke("chat", {"prompt": "hi"}, session_id="dave", wait=10)
        (tmp_path / "agents" / "chat.yml").write_text(AGENT.replace("Be kind.", "Be brief."))
        await node.reload_agents()
        second = await node.orchestrator.invoke("chat", {"prompt": "and now?"}, session_id="dave", wait=10)

    assert (first.agent_version, first.output) == (1, "0 before; you said hi (Be kind.)")
    assert (second.agent_version, second.output) == (2, "2 before; you said and now? (Be brief.)")


async def test_the_conversation_survives_a_restart(tmp_path: Path) -> None:
    async with (node := _node(tmp_path)).running():
        await node.orchestrator.invoke("chat", {"prompt": "remember me"}, session_id="carol", wait=10)

    restarted = _node(tmp_path)
    async with restarted.running():
        again = await restarted.orchestrator.invoke("chat", {"prompt": "still there?"}, session_id="carol", wait=10)
        app = restarted.apps()["state"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as http:
            stored = (await http.get("/state/chat/carol")).json()

    assert again.output == "2 before; you said still there?"
    assert [m["role"] for m in stored["history"]] == ["user", "assistant", "user", "assistant"]
    assert stored["version"] == 2


async def test_the_session_falls_back_to_the_slack_thread_of_a_slack_run_else_a_new_one(tmp_path: Path) -> None:
    # Issue 19 rule 5: no shared `default` session; an invocation without one gets its own,
    # and a task_data that only looks like Slack's names no session.
    node = _node(tmp_path)
    async with node.running():
        await node.orchestrator.invoke(
            "chat", {"prompt": "in a thread"}, origin=slack_origin(channel_id="C1", thread_ts="171.5"), wait=10
        )
        first = await node.orchestrator.invoke("chat", {"prompt": "anywhere", "thread_ts": "171.9"}, wait=10)
        second = await node.orchestrator.invoke("chat", {"prompt": "elsewhere"}, wait=10)
        threaded = await node.store.sessions.load_state("chat", "171.5")
        new = await node.store.sessions.load_state("chat", first.session_id or "")
        with pytest.raises(StateNotFoundError):
            await node.store.sessions.load_state("chat", "171.9")

    assert threaded.history[0]["content"] == "in a thread"
    assert new.history[0]["content"] == "anywhere"
    assert first.session_id != second.session_id
    assert second.output == "0 before; you said elsewhere"
