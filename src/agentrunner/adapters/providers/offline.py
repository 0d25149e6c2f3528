"""Providers that need no network: `echo` for demos, `scripted` for tests.

They are chosen only by an agent that names them; never as a fallback for a real vendor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from agentrunner.domain.execution import Usage
from agentrunner.domain.llm import Completion, LLMRequest
from agentrunner.domain.pricing import cost_usd


def _count_tokens(text: str) -> int:
    # A whitespace word count: these providers have no tokenizer, and it is stable.
    return len(text.split())


def _completion(provider: str, request: LLMRequest, text: str) -> Completion:
    usage = Usage(
        input_tokens=sum(_count_tokens(message.content) for message in request.messages),
        output_tokens=_count_tokens(text),
    )
    return Completion(text=text, finish_reason="stop", usage=usage, cost_usd=cost_usd(provider, request.model, usage))


class EchoProvider:
    """Answers with the last user message: the keyless demo provider."""

    name = "echo"

    async def complete(self, request: LLMRequest) -> Completion:
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        return _completion(self.name, request, last_user)

    async def close(self) -> None:
        return None


Script = Sequence[str] | Callable[[LLMRequest], Awaitable[str] | str]


class ScriptedProvider:
    """Answers from a list of replies (in turn, repeating the last) or from a callable."""

    name = "scripted"

    def __init__(self, script: Script) -> None:
        self._script = script
        self.requests: list[LLMRequest] = []

    async def complete(self, request: LLMRequest) -> Completion:
        self.requests.append(request)
        if callable(self._script):
            reply = self._script(request)
            text = reply if isinstance(reply, str) else await reply
        else:
            replies = list(self._script)
            text = replies[min(len(self.requests), len(replies)) - 1] if replies else ""
        return _completion(self.name, request, text)

    async def close(self) -> None:
        return None
