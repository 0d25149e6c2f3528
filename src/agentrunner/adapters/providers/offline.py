"""Providers that need no network: `echo` for demos, `scripted` for tests.

They are chosen only by an agent that names them; never as a fallback for a real vendor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from agentrunner.domain.execution import Usage
from agentrunner.domain.llm import Completion, LLMRequest, StreamItem, TextDelta


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


Reply = str | Completion
Script = Sequence[Reply] | Callable[[LLMRequest], Awaitable[Reply] | Reply]


class ScriptedProvider:
    """Answers from a list of replies (in turn, repeating the last) or from a callable. A
    reply is the answer's text, or a whole `Completion` (to answer with tool calls); a
    Completion without usage gets the word counts of the other replies."""

    name = "scripted"

    def __init__(self, script: Script) -> None:
        self._script = script
        self.requests: list[LLMRequest] = []

    async def complete(self, request: LLMRequest) -> Completion:
        self.requests.append(request)
        reply: Reply
        if callable(self._script):
            answer = self._script(request)
            reply = answer if isinstance(answer, str | Completion) else await answer
        else:
            replies = list(self._script)
            reply = replies[min(len(self.requests), len(replies)) - 1] if replies else ""
        if isinstance(reply, str):
            return _completion(request, reply)
        if reply.usage == Usage():
            return reply.model_copy(update={"usage": _completion(request, reply.text).usage})
        return reply

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        async for item in _streamed(await self.complete(request)):
            yield item

    async def close(self) -> None:
        return None
