"""LLMProvider for Anthropic's Messages API via the `anthropic` SDK."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, TypedDict

import anthropic
from anthropic import AsyncAnthropic, Omit, omit
from anthropic.types import ContentBlockParam, MessageParam, ToolChoiceParam, ToolParam, ToolResultBlockParam

from agentrunner.adapters.providers.offloop import BuiltOffLoop
from agentrunner.domain.errors import (
    LLMAuthError,
    LLMBadRequestError,
    LLMError,
    LLMRateLimitError,
    LLMUnavailableError,
)
from agentrunner.domain.execution import Usage
from agentrunner.domain.llm import (
    ANSWER_TOOL_DESCRIPTION,
    ANSWER_TOOL_NAME,
    Completion,
    LLMRequest,
    Message,
    StreamItem,
    TextDelta,
    ToolCall,
    ToolDefinition,
    answer_from_tool,
    answer_tool_schema,
)

# Anthropic requires `max_tokens` on every request; this is the cap when the agent sets none.
DEFAULT_MAX_TOKENS = 1024

# The status each `error.type` stands for. An `error` event inside a stream arrives after the
# response has already started with 200, so its type is all that says what went wrong.
_STATUS_OF_ERROR_TYPE: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def translate_error(exc: anthropic.AnthropicError) -> LLMError:
    """The agentrunner error for an `anthropic` SDK exception (the one place they are mapped)."""
    detail = f"anthropic: {exc}"
    if isinstance(exc, anthropic.CredentialsError | anthropic.WorkloadIdentityError):
        return LLMAuthError(f"{detail} (check ANTHROPIC_API_KEY)")
    if not isinstance(exc, anthropic.APIStatusError):
        # Refused, timed out, an answer the SDK could not read, or a retry it was asked for.
        return LLMUnavailableError(detail)
    status = exc.status_code
    if status < 400:
        status = _STATUS_OF_ERROR_TYPE.get(exc.type or "", 500)
    if status == 429:
        retry_after = _retry_after_seconds(exc.response.headers.get("retry-after"))
        if retry_after is None:
            return LLMRateLimitError(detail)
        return LLMRateLimitError(detail, retry_after=retry_after)
    if status == 402:
        return LLMAuthError(f"{detail} (check the billing of the Anthropic account)", status=status)
    if status in (401, 403):
        return LLMAuthError(f"{detail} (check ANTHROPIC_API_KEY)", status=status)
    if status in (408, 499) or status >= 500:
        return LLMUnavailableError(detail, status=status)
    return LLMBadRequestError(detail, status=status)


def _retry_after_seconds(value: str | None) -> float | None:
    # Anthropic sends seconds; an HTTP date (also legal) is not worth parsing for a hint.
    try:
        return float(value) if value else None
    except ValueError:
        return None


class _MessageArgs(TypedDict):
    model: str
    max_tokens: int
    messages: list[MessageParam]
    system: str | Omit
    tools: list[ToolParam] | Omit
    tool_choice: ToolChoiceParam | Omit
    stop_sequences: list[str] | Omit
    extra_body: dict[str, Any] | None


def _message_args(request: LLMRequest) -> _MessageArgs:
    system = "\n\n".join(m.content for m in request.messages if m.role == "system")
    tools = [_tool(tool) for tool in request.tools]
    tool_choice: ToolChoiceParam | Omit = omit
    if request.response_schema is not None:
        # Structured output through a forced tool: the answer is its input. With tools of
        # the agent's own, any tool must be called (one of them, or the answer).
        tools.append(_answer_tool(request.response_schema))
        tool_choice = {"type": "any"} if request.tools else {"type": "tool", "name": ANSWER_TOOL_NAME}
    return _MessageArgs(
        model=request.model,
        max_tokens=request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS,
        messages=_turns(request.messages),
        system=system or omit,
        tools=tools or omit,
        tool_choice=tool_choice,
        stop_sequences=request.stop or omit,
        # This SDK version has no `temperature` parameter; the API still takes it in the body.
        extra_body={"temperature": request.temperature} if request.temperature is not None else None,
    )


def _turns(messages: Sequence[Message]) -> list[MessageParam]:
    turns: list[tuple[Literal["user", "assistant"], list[ContentBlockParam]]] = []
    for message in messages:
        if message.role == "system":
            continue
        role: Literal["user", "assistant"] = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if turns and turns[-1][0] == role:
            # Turns must alternate: the results of parallel tool calls share one user turn.
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    return [_turn(role, blocks) for role, blocks in turns]


def _turn(role: Literal["user", "assistant"], blocks: list[ContentBlockParam]) -> MessageParam:
    content = _content(blocks)
    if role == "user":
        return {"role": "user", "content": content}
    return {"role": "assistant", "content": content}


def _blocks(message: Message) -> list[ContentBlockParam]:
    if message.role == "tool":
        if message.tool_call_id is None:
            raise LLMBadRequestError(
                "anthropic: a 'tool' message needs the tool_call_id of the call it answers",
                content=message.content[:80],
            )
        result: ToolResultBlockParam = {
            "type": "tool_result",
            "tool_use_id": message.tool_call_id,
            "content": message.content,
        }
        if message.is_error:
            result["is_error"] = True
        return [result]
    blocks: list[ContentBlockParam] = []
    if message.content or not message.tool_calls:
        blocks.append({"type": "text", "text": message.content})
    blocks.extend(
        {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments} for call in message.tool_calls
    )
    return blocks


def _content(blocks: list[ContentBlockParam]) -> str | list[ContentBlockParam]:
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        return blocks[0]["text"]
    return blocks


def _tool(tool: ToolDefinition) -> ToolParam:
    param: ToolParam = {"name": tool.name, "input_schema": tool.parameters}
    if tool.description:
        param["description"] = tool.description
    return param


def _answer_tool(schema: dict[str, Any]) -> ToolParam:
    return {
        "name": ANSWER_TOOL_NAME,
        "description": ANSWER_TOOL_DESCRIPTION,
        "input_schema": answer_tool_schema(schema),
    }


def _completion(message: anthropic.types.Message, started: float, schema: dict[str, Any] | None) -> Completion:
    texts: list[str] = []
    tool_calls: list[ToolCall] = []
    for block in message.content:
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_use" and schema is not None and block.name == ANSWER_TOOL_NAME:
            # The forced answer is the answer's text, not a call to run: prose written
            # around it and calls asked with it are dropped (the run ends with the answer).
            texts, tool_calls = [answer_from_tool(dict(block.input), schema)], []
            break
        elif block.type == "tool_use":
            tool_calls.append(ToolCall(id=block.id, name=block.name, arguments=dict(block.input)))
    return Completion(
        text="".join(texts),
        tool_calls=tool_calls,
        finish_reason=message.stop_reason,
        usage=_usage(message.usage),
        latency_ms=(time.perf_counter() - started) * 1000,
        request_id=message.id,
    )


def _usage(usage: anthropic.types.Usage) -> Usage:
    # Input read from or written to the prompt cache is reported beside `input_tokens`, not
    # in it: it is input all the same, counted (and priced at the input rate: more than a
    # cache read costs, never less) so that a budget is never short of it.
    cached = (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
    return Usage(input_tokens=usage.input_tokens + cached, output_tokens=usage.output_tokens)


class AnthropicProvider:
    """Messages API through `AsyncAnthropic`; retries are left to the caller's policy."""

    name = "anthropic"

    def __init__(self, *, api_key: str, base_url: str | None = None, timeout: float = 120.0) -> None:
        # Built on first use, in a worker thread (it reads CA files): see offloop.py.
        self._client = BuiltOffLoop(
            functools.partial(AsyncAnthropic, api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)
        )

    async def complete(self, request: LLMRequest) -> Completion:
        args = _message_args(request)
        started = time.perf_counter()
        try:
            client = await self._client.get()
            message = await client.messages.create(**args)
        except anthropic.AnthropicError as exc:
            raise translate_error(exc) from exc
        return _completion(message, started, request.response_schema)

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        args = _message_args(request)
        started = time.perf_counter()
        try:
            client = await self._client.get()
            async with client.messages.stream(**args) as events:
                async for event in events:
                    if event.type == "content_block_delta" and event.delta.type == "text_delta" and event.delta.text:
                        yield TextDelta(text=event.delta.text)
                message = await events.get_final_message()
        except anthropic.AnthropicError as exc:
            raise translate_error(exc) from exc
        yield _completion(message, started, request.response_schema)

    async def close(self) -> None:
        client = self._client.forget()
        if client is not None:
            await client.close()
