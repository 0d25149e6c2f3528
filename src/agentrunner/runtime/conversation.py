"""A continuous agent's turn: its session's history in, the answer out, the history saved
after the step (so a crash or restart resumes with it)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agentrunner.domain.agent import AgentConfig, ContinuousConfig
from agentrunner.domain.errors import ConflictError, StateNotFoundError
from agentrunner.domain.execution import Execution
from agentrunner.domain.llm import Completion
from agentrunner.domain.state import AgentState
from agentrunner.logs import get_logger
from agentrunner.ports import LLMProvider, StateStore, Tool, ToolContext
from agentrunner.runtime.agent_run import run_agent, user_prompt
from agentrunner.runtime.llm_calls import TextSink
from agentrunner.runtime.tool_calls import ToolSink

log = get_logger(__name__)

DEFAULT_SESSION = "default"
SAVE_ATTEMPTS = 5
DEFAULT_MAX_HISTORY_BYTES = 1024 * 1024  # MAX_HISTORY_BYTES


def session_of(execution: Execution) -> str:
    """The session a continuous execution belongs to: its `session_id`, else the Slack
    thread or channel in its input, else `default`."""
    if execution.session_id:
        return execution.session_id
    for key in ("thread_ts", "channel_id", "channel"):
        value = execution.input.get(key)
        if isinstance(value, str) and value:
            return value
    return DEFAULT_SESSION


async def load_session(store: StateStore, agent: str, session: str) -> AgentState:
    """The session's state, or an empty one (version 0) when it has none yet."""
    try:
        return await store.load_state(agent, session)
    except StateNotFoundError:
        return AgentState(agent=agent, session_id=session)


async def converse(
    config: AgentConfig,
    provider: LLMProvider,
    store: StateStore,
    execution: Execution,
    *,
    on_text: TextSink | None = None,
    retry_base_seconds: float = 0.5,
    tools: Sequence[Tool] = (),
    on_tool_call: ToolSink | None = None,
    max_history_bytes: int = DEFAULT_MAX_HISTORY_BYTES,
) -> Completion:
    """One turn of `config` in its session: answer with the history, then append the
    exchange (bounded by `max_conversation_history` messages and `max_history_bytes`) and
    save it. Two turns of the same session at once both land: a save that finds a newer
    version appends to it."""
    session = session_of(execution)
    state = await load_session(store, config.name, session)
    completion = await run_agent(
        config,
        provider,
        execution.input,
        on_text=on_text,
        history=bound_history(state.history, max_history_bytes),  # a history written before the bound
        retry_base_seconds=retry_base_seconds,
        tools=tools,
        context=ToolContext(
            agent=config.name, execution_id=execution.execution_id, session_id=session, trace_id=execution.trace_id
        ),
        on_tool_call=on_tool_call,
    )
    exchange: list[dict[str, Any]] = [
        {"role": "user", "content": user_prompt(execution.input), "execution_id": execution.execution_id},
        {"role": "assistant", "content": completion.text, "execution_id": execution.execution_id},
    ]
    await _append(config, store, state, exchange, max_history_bytes)
    return completion


async def keep_interrupted(
    config: AgentConfig,
    store: StateStore,
    execution: Execution,
    *,
    max_history_bytes: int = DEFAULT_MAX_HISTORY_BYTES,
) -> None:
    """An interrupted turn (on_busy: interrupt) leaves its user message in the history,
    marked, so the next turn knows what was asked; it has no answer."""
    state = await load_session(store, config.name, session_of(execution))
    message = {
        "role": "user",
        "content": user_prompt(execution.input),
        "execution_id": execution.execution_id,
        "interrupted": True,
    }
    await _append(config, store, state, [message], max_history_bytes)


def history_size(history: Sequence[dict[str, Any]]) -> int:
    """Bytes of `history` as compact UTF-8 JSON, as it is stored."""
    return sum(_message_size(message) + 1 for message in history) + 1


def _message_size(message: dict[str, Any]) -> int:
    return len(json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=str).encode())


def bound_history(history: list[dict[str, Any]], max_bytes: int) -> list[dict[str, Any]]:
    """The newest messages of `history` that fit in `max_bytes` of JSON: the oldest go first."""
    sizes = [_message_size(message) + 1 for message in history]
    total = sum(sizes) + 1
    start = 0
    while total > max_bytes and start < len(history):
        total -= sizes[start]
        start += 1
    return history[start:]


async def _append(
    config: AgentConfig, store: StateStore, state: AgentState, entries: list[dict[str, Any]], max_bytes: int
) -> None:
    """Append `entries` to the session's history (bounded by `max_conversation_history`
    messages and `max_bytes`, the oldest dropped first) and save it; a save that finds a
    newer version appends to that one."""
    limit = (config.continuous_config or ContinuousConfig()).max_conversation_history
    for _ in range(SAVE_ATTEMPTS):
        history = bound_history([*state.history, *entries][-limit:], max_bytes)
        try:
            await store.save_state(state.model_copy(update={"history": history}), expected_version=state.version)
            return
        except ConflictError:
            state = await load_session(store, state.agent, state.session_id)  # another turn saved first
    log.error("session history not saved after retries", agent=config.name, session=state.session_id)
