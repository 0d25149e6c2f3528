"""Run one agent once: turn the task into messages, then the agent loop: ask its provider
with the agent's tools, run the tool calls it answers with, ask again with their results,
until a final answer (or `max_tool_iterations`). Every mode runs its agents through here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from agentrunner.domain.agent import AgentConfig, ProviderName
from agentrunner.domain.errors import OutputInvalidError
from agentrunner.domain.execution import Usage
from agentrunner.domain.llm import Completion, LLMRequest, Message, ToolDefinition, add_cost
from agentrunner.domain.plan import ASK_HUMAN_TOOL, ask_human_output
from agentrunner.domain.structured_output import CheckedAnswer, check_answer, instructions, retry_prompt
from agentrunner.logs import get_logger
from agentrunner.ports.providers import LLMProvider
from agentrunner.ports.tools import Tool, ToolContext
from agentrunner.runtime.journal import RunJournal
from agentrunner.runtime.llm_calls import TextSink, complete_with_retries
from agentrunner.runtime.tool_calls import ToolBudget, ToolSink, run_tool_calls

log = get_logger(__name__)

# Keys of task_data read as the user's prompt, in this order (`output` is what a chained
# agent receives from the one before); otherwise the whole task_data is sent as JSON, so
# structured tasks (a schedule's report_type, ...) still reach the model.
PROMPT_KEYS = ("prompt", "message", "text", "question", "query", "input", "output")

# The key of task_data under which a collaborative run hands a step its context; with
# `allow_clarification`, the step's agent is offered the `ask_human` tool.
COLLABORATION_KEY = "collaboration"

# Providers that constrain the answer to `output_schema` themselves (a JSON-schema response
# format, or a forced tool); the others are told the schema in the system prompt.
NATIVE_STRUCTURED_OUTPUT = frozenset(
    {ProviderName.OPENAI, ProviderName.ANTHROPIC, ProviderName.BEDROCK, ProviderName.OLLAMA}
)


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
    config: AgentConfig,
    task_data: dict[str, Any],
    *,
    history: list[dict[str, Any]] | None = None,
    tools: Sequence[ToolDefinition] = (),
) -> LLMRequest:
    """The provider request for one run of `config` on `task_data`: a fresh context, or
    after the `history` of a continuous agent's session (`{"role", "content"}` items),
    offering `tools` (and `ask_human` to a collaborative step that may ask)."""
    messages = []
    schema = config.response_schema
    system = config.system_prompt
    if schema is not None and config.llm_config.provider not in NATIVE_STRUCTURED_OUTPUT:
        system = f"{system.strip()}\n\n{instructions(schema)}".strip()
    if system.strip():
        messages.append(Message(role="system", content=system))
    for item in history or []:
        if item.get("role") in ("user", "assistant"):
            messages.append(Message(role=item["role"], content=str(item.get("content", ""))))
    messages.append(Message(role="user", content=user_prompt(task_data)))
    llm = config.llm_config
    offered = [tool for tool in tools if tool.name != ASK_HUMAN_TOOL.name]
    if may_ask_human(task_data):
        offered.append(ASK_HUMAN_TOOL)
    return LLMRequest(
        model=llm.model,
        messages=messages,
        temperature=llm.temperature,
        max_tokens=llm.max_tokens,
        tools=offered,
        response_schema=schema,
    )


async def run_agent(
    config: AgentConfig,
    provider: LLMProvider,
    task_data: dict[str, Any],
    *,
    on_text: TextSink | None = None,
    history: list[dict[str, Any]] | None = None,
    retry_base_seconds: float = 0.5,
    tools: Sequence[Tool] = (),
    context: ToolContext | None = None,
    on_tool_call: ToolSink | None = None,
    journal: RunJournal | None = None,
    on_model_call: Callable[[Completion], None] | None = None,
) -> Completion:
    """Answer `task_data` as `config` describes: ask `provider` (transient failures tried
    again per `llm_config.max_attempts`; streamed to `on_text` when given), run the tool
    calls it answers with (records to `on_tool_call`) and ask again, until an answer
    without tool calls or `max_tool_iterations` rounds of calls. Returns the last answer
    with the usage and cost of every call; raises the last `LLMError`. A collaborative
    step that calls `ask_human` answers with the question (`domain.plan.ask_human_output`):
    the run pauses until a human answers. With `journal`, every model call and tool call is
    a step of it: one it recorded is replayed (not called, not streamed again), the others
    are recorded as they end (`runtime/journal.py`). With an `output_schema`, the final answer
    must be JSON that follows it: one that does not is sent back with the problems found (a
    new model step), `output_retries` times at most, then `OutputInvalidError` is raised; the
    answer returned is the parsed JSON as compact text. `on_model_call` is told of each
    model call made (not of one the journal replays) as it returns: what was paid for, even
    when the run then fails."""
    request = build_request(config, task_data, history=history, tools=[tool.definition for tool in tools])
    by_name = {tool.definition.name: tool for tool in tools}
    context = context or ToolContext(agent=config.name, execution_id="", session_id=None, trace_id="")
    budget = ToolBudget(left=config.max_tool_calls)
    usage, cost = Usage(), None
    schema = config.response_schema
    corrections = 0  # answers sent back for not following `output_schema`
    iteration = 1
    while True:

        async def call(request: LLMRequest = request) -> Completion:
            made = await complete_with_retries(
                provider, request, config.llm_config, on_text=on_text, base_delay_seconds=retry_base_seconds
            )
            if on_model_call is not None:
                on_model_call(made)
            return made

        # A correction is a model step like any other: journaled, so a resumed run replays it.
        completion = await (journal.model_call(call) if journal is not None else call())
        usage += completion.usage
        cost = add_cost(cost, completion.cost_usd)
        completion = completion.model_copy(update={"usage": usage, "cost_usd": cost})
        asked = next((call for call in completion.tool_calls if call.name == ASK_HUMAN_TOOL.name), None)
        if asked is not None and may_ask_human(task_data):
            return await _settled(journal, completion.model_copy(update={"text": ask_human_output(asked.arguments)}))
        if not completion.tool_calls and schema is not None:
            checked = await _checked(completion.text, schema)
            if not checked.valid:
                if corrections >= config.output_retries:
                    await _settled(journal, completion)
                    raise _invalid(config, corrections, checked.problems)
                corrections += 1
                log.info(
                    "answer does not follow output_schema, sent back",
                    agent=config.name,
                    execution_id=context.execution_id,
                    correction=corrections,
                    problems=list(checked.problems),
                )
                fix = [
                    Message(role="assistant", content=completion.text),
                    Message(role="user", content=retry_prompt(checked.problems)),
                ]
                request = request.model_copy(update={"messages": [*request.messages, *fix]})
                continue
            return await _settled(
                journal, completion.model_copy(update={"text": _json_text(checked.value), "output_json": checked.value})
            )
        if not completion.tool_calls:
            return await _settled(journal, completion)
        if iteration > config.max_tool_iterations:
            log.warning(
                "agent loop stopped at max_tool_iterations, last tool calls not run",
                agent=config.name,
                execution_id=context.execution_id,
                max_tool_iterations=config.max_tool_iterations,
            )
            stopped = completion.model_copy(update={"finish_reason": "max_tool_iterations"})
            if schema is not None:  # the output must follow the schema, whatever stopped the loop
                checked = await _checked(completion.text, schema)
                if not checked.valid:
                    await _settled(journal, stopped)
                    problems = ("the loop stopped at max_tool_iterations before an answer", *checked.problems)
                    raise _invalid(config, corrections, problems)
                stopped = stopped.model_copy(update={"text": _json_text(checked.value), "output_json": checked.value})
            return await _settled(journal, stopped)
        results = await run_tool_calls(
            completion.tool_calls,
            by_name,
            context,
            budget=budget,
            iteration=iteration,
            max_chars=config.tool_result_max_chars,
            on_tool_call=on_tool_call,
            journal=journal,
        )
        turn = Message(role="assistant", content=completion.text, tool_calls=completion.tool_calls)
        request = request.model_copy(update={"messages": [*request.messages, turn, *results]})
        iteration += 1


def _invalid(config: AgentConfig, corrections: int, problems: tuple[str, ...]) -> OutputInvalidError:
    return OutputInvalidError(
        f"agent {config.name!r} answered without following its output_schema "
        f"({corrections} correction(s) asked, output_retries {config.output_retries}): " + "; ".join(problems),
        problems=problems,
        agent=config.name,
    )


# Answers longer than this are parsed and validated in a worker thread, off the event loop.
_CHECK_INLINE_MAX_CHARS = 32_000


async def _checked(text: str, schema: dict[str, Any]) -> CheckedAnswer:
    if len(text) <= _CHECK_INLINE_MAX_CHARS:
        return check_answer(text, schema)
    return await asyncio.to_thread(check_answer, text, schema)


def _json_text(value: object) -> str:
    """The answer as compact JSON text (the execution's `output`); json, not orjson: a
    parsed answer may hold integers past 64 bits."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


async def _settled(journal: RunJournal | None, completion: Completion) -> Completion:
    """`completion`, once the journal settled what it held back (the last answer)."""
    if journal is not None:
        await journal.settle()
    return completion
