"""Providers that need no network: `echo` for demos, `scripted` for tests.

They are chosen only by an agent that names them; never as a fallback for a real vendor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from agentrunner.domain.execution import Usage
from agentrunner.domain.llm import Completion, LLMRequest, StreamItem, TextDelta, ToolCall


def _count_tokens(text: str) -> int:
    # A whitespace word count: these providers have no tokenizer, and it is stable.
    return len(text.split())


def _completion(request: LLMRequest, text: str) -> Completion:
    usage = Usage(
        input_tokens=sum(_count_tokens(message.content) for message in request.messages),
        output_tokens=_count_tokens(text),
    )
    return Completion(text=text, finish_reason="stop", usage=usage)


async def _streamed(completion: Completion) -> AsyncIterator[StreamItem]:
    words = completion.text.split(" ")
    for index, word in enumerate(words):
        yield TextDelta(text=word if index == len(words) - 1 else f"{word} ")
    yield completion


class EchoProvider:
    """Answers with the last user message: the keyless demo provider."""

    name = "echo"

    async def complete(self, request: LLMRequest) -> Completion:
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        return _completion(request, last_user)

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        async for item in _streamed(await self.complete(request)):
            yield item

    async def close(self) -> None:
        return None


Reply = str | Completion | dict[str, Any]
Script = Sequence[Reply] | Callable[[LLMRequest], Awaitable[Reply] | Reply]


def scripted_reply(reply: Reply) -> Completion:
    """A reply as a `Completion`. A dict scripts tool calls the way a model asks for them:
    `{"text": "...", "tool_calls": [{"name": "weather__forecast", "arguments": {...}}]}`
    (`id` optional: `call_<n>` by position)."""
    if isinstance(reply, Completion):
        return reply
    if isinstance(reply, str):
        return Completion(text=reply, finish_reason="stop")
    calls = [
        ToolCall(id=str(call.get("id") or f"call_{index}"), name=call["name"], arguments=call.get("arguments") or {})
        for index, call in enumerate(reply.get("tool_calls") or [], start=1)
    ]
    return Completion(
        text=str(reply.get("text", "")), tool_calls=calls, finish_reason="tool_calls" if calls else "stop"
    )


class ScriptedProvider:
    """Answers from a list of replies (in turn, repeating the last) or from a callable. A
    reply is the answer's text, a dict naming tool calls (`scripted_reply`), or a whole
    `Completion`; a reply without usage gets the word counts of the other replies."""

    name = "scripted"

    def __init__(self, script: Script) -> None:
        self._script = script
        self.requests: list[LLMRequest] = []

    async def complete(self, request: LLMRequest) -> Completion:
        self.requests.append(request)
        reply: Reply
        if callable(self._script):
            answer = self._script(request)
            reply = answer if isinstance(answer, str | Completion | dict) else await answer
        else:
            replies = list(self._script)
            reply = replies[min(len(self.requests), len(replies)) - 1] if replies else ""
        completion = scripted_reply(reply)
        if completion.usage == Usage():
            return completion.model_copy(update={"usage": _completion(request, completion.text).usage})
        return completion

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        async for item in _streamed(await self.complete(request)):
            yield item

    async def close(self) -> None:
        return None
