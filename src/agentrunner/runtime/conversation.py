"""A continuous agent's turn: its session's history in, the answer out, the history saved
after the step (so a crash or restart resumes with it).

Sessions belong to a tenant (ARCHITECTURE §10): a session is named by (agent, tenant,
session id), so two tenants' "s1" are two conversations. An invocation that names no
session gets a new one (`new_session`), whose id its answer carries: no two callers ever
share a conversation they did not both name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from agentrunner.domain.agent import AgentConfig, ContinuousConfig, ExecutionMode
from agentrunner.domain.errors import ConflictError, StateNotFoundError
from agentrunner.domain.event import new_id
from agentrunner.domain.execution import Execution
from agentrunner.domain.llm import Completion
from agentrunner.domain.state import AgentState
from agentrunner.logs import get_logger
from agentrunner.ports.providers import LLMProvider
from agentrunner.ports.state import SessionStore
from agentrunner.ports.tools import Tool, ToolContext
from agentrunner.runtime.agent_run import run_agent, user_prompt
from agentrunner.runtime.journal import RunJournal
from agentrunner.runtime.llm_calls import TextSink
from agentrunner.runtime.tool_calls import ToolSink
from agentrunner.tracing import as_tenant

log = get_logger(__name__)

SAVE_ATTEMPTS = 5
DEFAULT_MAX_HISTORY_BYTES = 1024 * 1024  # MAX_HISTORY_BYTES


def session_of(execution: Execution) -> str:
    """The session a continuous execution belongs to (within its tenant): its `session_id`,
    else the Slack thread or channel of a run the Slack gateway started (its origin, never
    task_data), else its own (a turn that names no session shares nobody's: never a common
    default)."""
    if execution.session_id:
        return execution.session_id
    return _slack_session(execution.slack_origin) or f"execution:{execution.execution_id}"


def new_session(config: AgentConfig, origin: dict[str, Any] | None) -> str | None:
    """The id of a new session for an invocation of `config` that names none: a continuous
    agent's caller continues it by sending this id back. None for other modes, and for a
    run the Slack gateway started in a thread or channel (their session)."""
    if config.execution_mode is not ExecutionMode.CONTINUOUS or _slack_session(origin):
        return None
    return new_id()


def _slack_session(origin: dict[str, Any] | None) -> str | None:
    """The Slack thread, else channel, of a Slack origin (`Execution.slack_origin`)."""
    for key in ("thread_ts", "channel_id"):
        value = (origin or {}).get(key)
        if isinstance(value, str) and value:
            return value
    return None


async def load_session(store: SessionStore, agent: str, session: str, tenant: str | None = None) -> AgentState:
    """`tenant`'s session state, or an empty one (version 0) when it has none yet."""
    try:
        return await store.load_state(agent, session, tenant=tenant)
    except StateNotFoundError:
        return AgentState(agent=agent, session_id=session, tenant=tenant)


async def converse(
    config: AgentConfig,
    provider: LLMProvider,
    store: SessionStore,
    execution: Execution,
    *,
    on_text: TextSink | None = None,
    retry_base_seconds: float = 0.5,
    tools: Sequence[Tool] = (),
    on_tool_call: ToolSink | None = None,
    max_history_bytes: int = DEFAULT_MAX_HISTORY_BYTES,
    journal: RunJournal | None = None,
    on_model_call: Callable[[Completion], None] | None = None,
    kept: Callable[[Completion], bool] | None = None,
) -> Completion:
    """One turn of `config` in its session: answer with the history, then append the
    exchange (bounded by `max_conversation_history` messages and `max_history_bytes`) and
    save it. Two turns of the same session at once both land: a save that finds a newer
    version appends to it. With `journal`, the turn's steps are journaled, and each model call
    made is told to `on_model_call` (`run_agent`). An answer `kept` refuses (one that fails the
    agent's checks under `on_check_failure: fail`) leaves no trace in the history, as an
    answer that never followed `output_schema` leaves none."""
    session = session_of(execution)
    state = await load_session(store, config.name, session, execution.tenant)
    with as_tenant(execution.tenant):  # its tools (session memory) act within its tenant
        completion = await run_agent(
            config,
            provider,
            execution.input,
            on_text=on_text,
            history=bound_history(state.history, max_history_bytes),  # a history written before the bound
            retry_base_seconds=retry_base_seconds,
            tools=tools,
            context=ToolContext.serving(execution, session_id=session),
            on_tool_call=on_tool_call,
            journal=journal,
            on_model_call=on_model_call,
        )
    if kept is not None and not kept(completion):
        return completion
    exchange: list[dict[str, Any]] = [
        {"role": "user", "content": user_prompt(execution.input), "execution_id": execution.execution_id},
        {"role": "assistant", "content": completion.text, "execution_id": execution.execution_id},
    ]
    await _append(config, store, state, exchange, max_history_bytes)
    return completion


async def keep_interrupted(
    config: AgentConfig,
    store: SessionStore,
    execution: Execution,
    *,
    max_history_bytes: int = DEFAULT_MAX_HISTORY_BYTES,
) -> None:
    """An interrupted turn (on_busy: interrupt) leaves its user message in the history,
    marked, so the next turn knows what was asked; it has no answer."""
    state = await load_session(store, config.name, session_of(execution), execution.tenant)
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
    config: AgentConfig, store: SessionStore, state: AgentState, entries: list[dict[str, Any]], max_bytes: int
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
            state = await load_session(store, state.agent, state.session_id, state.tenant)  # another turn saved first
    log.error("session history not saved after retries", agent=config.name, session=state.session_id)
