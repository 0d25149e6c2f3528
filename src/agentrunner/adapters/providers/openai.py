"""LLMProvider for OpenAI Chat Completions (and any server that speaks it) via the `openai` SDK."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
from openai import AsyncOpenAI

from agentrunner.adapters.providers.offloop import BuiltOffLoop
from agentrunner.domain.errors import (
    LLMAuthError,
    LLMBadRequestError,
    LLMError,
    LLMRateLimitError,
    LLMUnavailableError,
)
from agentrunner.domain.execution import Usage
from agentrunner.domain.llm import Completion, LLMRequest, Message, StreamItem, TextDelta, ToolCall


def translate_error(exc: openai.OpenAIError) -> LLMError:
    """The agentrunner error for an `openai` SDK exception (the one place they are mapped)."""
    detail = f"openai: {exc}"
    if isinstance(exc, openai.RateLimitError):
        retry_after = exc.response.headers.get("retry-after")
        return LLMRateLimitError(detail, retry_after=float(retry_after) if retry_after else None)
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return LLMAuthError(f"{detail} (check OPENAI_API_KEY)")
    if isinstance(exc, openai.LengthFinishReasonError | openai.ContentFilterFinishReasonError):
        # The answer was cut at its token limit or refused by the content filter (the SDK's
        # parsing helpers raise these): the same request would end the same way again.
        return LLMBadRequestError(detail)
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError | openai.InternalServerError):
        return LLMUnavailableError(detail)
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return LLMUnavailableError(detail)
        return LLMBadRequestError(detail, status=exc.status_code)
    return LLMUnavailableError(detail)


def _message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "content": message.content, "tool_call_id": message.tool_call_id}
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        wire["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in message.tool_calls
        ]
    return wire


def _arguments(raw: str | None) -> dict[str, Any]:
    try:
        parsed = json.loads(raw or "{}")
    except ValueError:
        return {"_raw": raw}
    return parsed if isinstance(parsed, dict) else {"_value": parsed}


class OpenAIProvider:
    """Chat Completions through `AsyncOpenAI`; one attempt per call (retries are the
    caller's policy)."""

    name = "openai"

    def __init__(self, *, api_key: str, base_url: str | None = None, timeout: float = 120.0) -> None:
        # Built on first use, in a worker thread (it reads CA files): see offloop.py.
        self._client = BuiltOffLoop(
            functools.partial(AsyncOpenAI, api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)
        )

    def _arguments(self, request: LLMRequest) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": request.model,
            "messages": [_message(m) for m in request.messages],
            **request.sampling(temperature="temperature", max_tokens="max_tokens", stop="stop"),
        }
        if request.tools:
            arguments["tools"] = [tool.as_function() for tool in request.tools]
        if request.response_schema is not None:
            arguments["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": request.response_schema},
            }
        return arguments

    async def complete(self, request: LLMRequest) -> Completion:
        started = time.perf_counter()
        try:
            client = await self._client.get()
            response = await client.chat.completions.create(**self._arguments(request))
        except openai.OpenAIError as exc:
            raise translate_error(exc) from exc
        choice = response.choices[0] if response.choices else None
        calls = [
            ToolCall(id=call.id, name=call.function.name, arguments=_arguments(call.function.arguments))
            for call in ((choice.message.tool_calls or []) if choice else [])
            if call.type == "function"
        ]
        return Completion(
            text=(choice.message.content or "") if choice else "",
            tool_calls=calls,
            finish_reason=choice.finish_reason if choice else None,
            usage=Usage(
                input_tokens=response.usage.prompt_tokens if response.usage else 0,
                output_tokens=response.usage.completion_tokens if response.usage else 0,
            ),
            latency_ms=(time.perf_counter() - started) * 1000,
            request_id=response.id,
        )

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        started = time.perf_counter()
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage = Usage()
        finish_reason: str | None = None
        request_id: str | None = None
        try:
            client = await self._client.get()
            chunks = await client.chat.completions.create(
                **self._arguments(request), stream=True, stream_options={"include_usage": True}
            )
            async for chunk in chunks:
                request_id = chunk.id
                if chunk.usage:
                    usage = Usage(input_tokens=chunk.usage.prompt_tokens, output_tokens=chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    finish_reason = choice.finish_reason or finish_reason
                    if choice.delta.content:
                        text.append(choice.delta.content)
                        yield TextDelta(text=choice.delta.content)
                    for call in choice.delta.tool_calls or []:
                        slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                        slot["id"] = call.id or slot["id"]
                        if call.function:
                            slot["name"] = call.function.name or slot["name"]
                            slot["arguments"] += call.function.arguments or ""
        except openai.OpenAIError as exc:
            raise translate_error(exc) from exc
        yield Completion(
            text="".join(text),
            tool_calls=[
                ToolCall(id=slot["id"], name=slot["name"], arguments=_arguments(slot["arguments"]))
                for _, slot in sorted(calls.items())
            ],
            finish_reason=finish_reason,
            usage=usage,
            latency_ms=(time.perf_counter() - started) * 1000,
            request_id=request_id,
        )

    async def close(self) -> None:
        client = self._client.forget()
        if client is not None:
            await client.close()
