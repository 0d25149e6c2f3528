"""What every vendor fake offers the provider contract suite (tests/contract/test_llm_provider.py).

Each `tests/fakes/<vendor>_server.py` runs a loopback HTTP server that speaks the vendor's
wire protocol closely enough for the vendor's official SDK, and exposes
`running() -> contextmanager[FakeVendor]`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentrunner.ports.providers import LLMProvider


@dataclass
class Received:
    """One request as the fake understood it, in vendor-neutral terms."""

    model: str
    system: str | None
    # [{"role": "user"|"assistant"|"tool", "content": str}, ...] in order; a tool result the
    # vendor's format marks as failed has "is_error": True.
    messages: list[dict[str, Any]]
    temperature: float | None
    max_tokens: int | None
    tool_names: list[str] = field(default_factory=list)
    stream: bool = False
    # The request body as it came on the wire (vendor-specific: for asserting a vendor's own fields).
    body: dict[str, Any] = field(default_factory=dict)


class FakeVendor(Protocol):
    """A running fake and adapters pointed at it."""

    name: str  # the provider name: openai, anthropic, bedrock, ollama
    model: str  # a model with a known price in agentrunner.domain.pricing

    @property
    def received(self) -> list[Received]:
        """Every request received so far, oldest first."""
        ...

    def reply_with(
        self,
        text: str = "Paris is the capital of France.",
        *,
        tool_call: tuple[str, dict[str, Any]] | None = None,
        input_tokens: int = 11,
        output_tokens: int = 7,
    ) -> None:
        """Answer the next calls with this text (streamed in several pieces when streaming),
        or with a call of tool `tool_call[0]` with arguments `tool_call[1]`, and this usage."""
        ...

    def reply_in_turn(self, *replies: Reply) -> None:
        """Answer the next len(replies) calls with these, in order (then as `reply_with` says)."""
        ...

    def fail_with(self, *statuses: int) -> None:
        """Answer the next len(statuses) calls with these HTTP statuses, in the vendor's error
        body: 429 (with `retry-after: 1`), 500/503, 401 (bad key), 400 (context too long)."""
        ...

    def slow(self, seconds: float) -> None:
        """Wait this long before answering the next calls (0 to stop)."""
        ...

    def provider(self, *, timeout: float = 10.0) -> LLMProvider:
        """The agentrunner adapter for this vendor, configured against the fake."""
        ...

    def unreachable_provider(self) -> LLMProvider:
        """The adapter pointed at a loopback port where nothing listens."""
        ...


@dataclass(frozen=True)
class Reply:
    """What a fake answers: text, or a call of a tool, with this token usage."""

    text: str = "Paris is the capital of France."
    tool_call: tuple[str, dict[str, Any]] | None = None
    input_tokens: int = 11
    output_tokens: int = 7
    # Input the vendor read from or wrote to its prompt cache, which Anthropic and Bedrock
    # report beside `input_tokens`, not inside it.
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class ScriptedAnswers:
    """The part of `FakeVendor` every fake shares: what to answer next, which failures to
    answer first, how slow to be. Thread-safe (the fakes answer from server threads)."""

    def __init__(self) -> None:
        self._script_lock = threading.Lock()
        self._script_reply = Reply()
        self._script_turns: list[Reply] = []
        self._script_failures: list[int] = []
        self._script_delay = 0.0

    def reply_with(
        self,
        text: str = "Paris is the capital of France.",
        *,
        tool_call: tuple[str, dict[str, Any]] | None = None,
        input_tokens: int = 11,
        output_tokens: int = 7,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> None:
        with self._script_lock:
            self._script_reply = Reply(
                text, tool_call, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens
            )

    def reply_in_turn(self, *replies: Reply) -> None:
        """Answer the next len(replies) calls with these, in order (then as `reply_with` says)."""
        with self._script_lock:
            self._script_turns.extend(replies)

    def fail_with(self, *statuses: int) -> None:
        with self._script_lock:
            self._script_failures.extend(statuses)

    def slow(self, seconds: float) -> None:
        with self._script_lock:
            self._script_delay = seconds

    def next_answer(self) -> tuple[Reply, int | None, float]:
        """The reply, the status to fail this call with (or None), and the delay."""
        with self._script_lock:
            failure = self._script_failures.pop(0) if self._script_failures else None
            reply = self._script_turns.pop(0) if self._script_turns and failure is None else self._script_reply
            return reply, failure, self._script_delay
