"""Run one agent once: turn the task into messages, ask its provider, return the answer."""

from __future__ import annotations

from typing import Any

import orjson

from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.llm import Completion, LLMRequest, Message
from agentrunner.domain.plan import ASK_HUMAN_TOOL, ask_human_output
from agentrunner.ports import LLMProvider
from agentrunner.runtime.llm_calls import TextSink, complete_with_retries

# Keys of task_data read as the user's prompt, in this order (`output` is what a chained
# agent receives from the one before); otherwise the whole task_data is sent as JSON, so
# structured tasks (a schedule's report_type, ...) still reach the model.
PROMPT_KEYS = ("prompt", "message", "text", "question", "query", "input", "output")

# The key of task_data under which a collaborative run hands a step its context; with
# `allow_clarification`, the step's agent is offered the `ask_human` tool.
COLLABORATION_KEY = "collaboration"


def may_ask_human(task_data: dict[str, Any]) -> bool:
    """True when `task_data` is a collaborative step allowed to ask a human."""
    context = task_data.get(COLLABORATION_KEY)
    return isinstance(context, dict) and context.get("allow_clarification") is True


def user_prompt(task_data: dict[str, Any]) -> str:
    """The user message for `task_data`."""
    for key in PROMPT_KEYS:
        value = task_data.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return orjson.dumps(task_data, option=orjson.OPT_SORT_KEYS).decode()


def build_request(
    config: AgentConfig, task_data: dict[str, Any], *, history: list[dict[str, Any]] | None = None
) -> LLMRequest:
    """The provider request for one run of `config` on `task_data`: a fresh context, or
    after the `history` of a continuous agent's session (`{"role", "content"}` items)."""
    messages = []
    if config.system_prompt.strip():
        messages.append(Message(role="system", content=config.system_prompt))
    for item in history or []:
        if item.get("role") in ("user", "assistant"):
            messages.append(Message(role=item["role"], content=str(item.get("content", ""))))
    messages.append(Message(role="user", content=user_prompt(task_data)))
    llm = config.llm_config
    tools = [ASK_HUMAN_TOOL] if may_ask_human(task_data) else []
    return LLMRequest(
        model=llm.model, messages=messages, temperature=llm.temperature, max_tokens=llm.max_tokens, tools=tools
    )


async def run_agent(
    config: AgentConfig,
    provider: LLMProvider,
    task_data: dict[str, Any],
    *,
    on_text: TextSink | None = None,
    history: list[dict[str, Any]] | None = None,
    retry_base_seconds: float = 0.5,
) -> Completion:
    """Ask `provider` to answer `task_data` as `config` describes (transient failures
    tried again per `llm_config.max_attempts`; streamed to `on_text` when given); raises
    the last `LLMError`. A collaborative step that calls `ask_human` answers with the
    question (`domain.plan.ask_human_output`): the run pauses until a human answers."""
    request = build_request(config, task_data, history=history)
    completion = await complete_with_retries(
        provider, request, config.llm_config, on_text=on_text, base_delay_seconds=retry_base_seconds
    )
    if request.tools:
        asked = next((call for call in completion.tool_calls if call.name == ASK_HUMAN_TOOL.name), None)
        if asked is not None:
            return completion.model_copy(update={"text": ask_human_output(asked.arguments)})
    return completion
