"""LLMProvider for an Ollama server (`/api/chat`) via the `ollama` SDK."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import httpx
import ollama
import pydantic
from ollama import AsyncClient, ChatResponse

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

# Everything the SDK lets escape a call: its own errors, httpx's transport errors (the
# streaming path does not wrap them), the builtin ConnectionError it raises for a refused
# connection, and what a malformed request or answer raises while being (de)serialised.
SDK_ERRORS: tuple[type[Exception], ...] = (
    ollama.ResponseError,
    ollama.RequestError,
    httpx.HTTPError,
    ConnectionError,
    pydantic.ValidationError,
    json.JSONDecodeError,
)


def translate_error(exc: Exception, *, host: str | None = None) -> LLMError:
    """The agentrunner error for an exception of `SDK_ERRORS` (the one place they are mapped);
    `host`, when given, is named in the message of errors about reaching it."""
    detail = f"ollama: {exc}"
    if isinstance(exc, ollama.ResponseError):
        return _from_status(exc, detail)
    if isinstance(exc, ollama.RequestError):
        return LLMBadRequestError(detail)
    if isinstance(exc, pydantic.ValidationError) and exc.title != ChatResponse.__name__:
        # The SDK validates what we send before sending it; only ChatResponse is the server's.
        return LLMBadRequestError(detail)
    where = f"ollama at {host}" if host else "ollama"
    if isinstance(exc, httpx.TimeoutException):
        return LLMUnavailableError(
            f"{where}: no answer within the timeout ({type(exc).__name__}); "
            "raise LLM_TIMEOUT_SECONDS when the model is slow to load"
        )
    if isinstance(exc, ConnectionError | httpx.ConnectError):
        return LLMUnavailableError(
            f"{where}: cannot connect ({type(exc).__name__}); check that Ollama runs there, "
            "or set OLLAMA_HOST (or the agent's llm_config.host) to where it does"
        )
    # Dropped connections, malformed answers: the server's side.
    return LLMUnavailableError(f"{where}: {str(exc) or type(exc).__name__}")


def _from_status(exc: ollama.ResponseError, detail: str) -> LLMError:
    status = exc.status_code
    if status == 429:
        return LLMRateLimitError(detail, retry_after=_retry_after(exc))
    if status in {401, 403}:
        return LLMAuthError(f"{detail} (check OLLAMA_API_KEY for a server that requires one)")
    if status == 404:
        return LLMBadRequestError(f"{detail} (pull the model on the Ollama host: `ollama pull <model>`)", status=status)
    # -1: an error line in the middle of a stream, after a 200 (the runner failed).
    if status < 0 or status == 408 or status >= 500:
        return LLMUnavailableError(detail, status=status)
    return LLMBadRequestError(detail, status=status)


def _retry_after(exc: ollama.ResponseError) -> float | None:
    # The SDK raises ResponseError `from None` inside its `except HTTPStatusError`, so the
    # response (and its headers) survives only as the implicit context.
    context = exc.__context__
    if not isinstance(context, httpx.HTTPStatusError):
        return None
    try:
        return float(context.response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    # Ollama has no tool call ids: a tool answer names its tool instead, found through the
    # id of the assistant's call it answers.
    tool_names = {call.id: call.name for m in messages for call in m.tool_calls}
    wire: list[dict[str, Any]] = []
    for message in messages:
        entry: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            entry["tool_calls"] = [
                {"function": {"name": call.name, "arguments": call.arguments}} for call in message.tool_calls
            ]
        if message.role == "tool" and message.tool_call_id in tool_names:
            entry["tool_name"] = tool_names[message.tool_call_id]
        wire.append(entry)
    return wire


def _arguments(request: LLMRequest) -> dict[str, Any]:
    arguments: dict[str, Any] = {"model": request.model, "messages": _messages(request.messages)}
    options = request.sampling(temperature="temperature", max_tokens="num_predict", stop="stop")
    if options:
        arguments["options"] = options
    if request.tools:
        arguments["tools"] = [tool.as_function() for tool in request.tools]
    if request.response_schema is not None:
        arguments["format"] = request.response_schema
    return arguments


def _tool_calls(response: ChatResponse, first_index: int = 0) -> list[ToolCall]:
    return [
        ToolCall(id=f"call_{index}", name=call.function.name, arguments=dict(call.function.arguments))
        for index, call in enumerate(response.message.tool_calls or [], start=first_index)
    ]


def _usage(response: ChatResponse) -> Usage:
    return Usage(input_tokens=response.prompt_eval_count or 0, output_tokens=response.eval_count or 0)


class OllamaProvider:
    """Chat through `ollama.AsyncClient`; one attempt per call (retries are the caller's
    policy). Ollama gives tool calls no ids, so they get `call_<n>` in answer order."""

    name = "ollama"

    def __init__(self, *, host: str, timeout: float = 120.0) -> None:
        self._host = host
        # Built on first use, in a worker thread (it reads CA files): see offloop.py.
        self._client = BuiltOffLoop(functools.partial(AsyncClient, host=host, timeout=timeout))

    async def complete(self, request: LLMRequest) -> Completion:
        started = time.perf_counter()
        try:
            client = await self._client.get()
            response = await client.chat(**_arguments(request), stream=False)
        except SDK_ERRORS as exc:
            raise translate_error(exc, host=self._host) from exc
        return Completion(
            text=response.message.content or "",
            tool_calls=_tool_calls(response),
            finish_reason=response.done_reason,
            usage=_usage(response),
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        started = time.perf_counter()
        text: list[str] = []
        calls: list[ToolCall] = []
        final: ChatResponse | None = None
        chunks: AsyncIterator[ChatResponse] | None = None
        try:
            client = await self._client.get()
            chunks = await client.chat(**_arguments(request), stream=True)
            async for chunk in chunks:
                calls.extend(_tool_calls(chunk, first_index=len(calls)))
                if chunk.message.content:
                    text.append(chunk.message.content)
                    yield TextDelta(text=chunk.message.content)
                if chunk.done:
                    final = chunk
        except SDK_ERRORS as exc:
            raise translate_error(exc, host=self._host) from exc
        finally:
            # A consumer that stops early must not leave the HTTP response open.
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()
        if final is None:
            raise LLMUnavailableError(f"ollama: the stream for model {request.model!r} ended before its final chunk")
        yield Completion(
            text="".join(text),
            tool_calls=calls,
            finish_reason=final.done_reason,
            usage=_usage(final),
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    async def close(self) -> None:
        client = self._client.forget()
        if client is not None:
            await client.close()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated
