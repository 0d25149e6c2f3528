"""What the runtime asks of an LLM provider, and what it gets back, in one shape for
every vendor."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentrunner.domain.execution import Usage


class ToolCall(BaseModel):
    """A tool the model asked to call, in one shape for every vendor."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Message(BaseModel):
    """One chat message. An assistant message may carry tool calls; a `tool` message
    answers the call named by `tool_call_id`."""

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    # A tool result that reports a failure (the tool raised, timed out, was refused).
    is_error: bool = False


class ToolDefinition(BaseModel):
    """A tool offered to the model: its name, what it does, and its arguments' JSON schema."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    def as_function(self) -> dict[str, Any]:
        """The tool in the `{"type": "function", "function": ...}` shape OpenAI defined and
        Ollama (and other compatible servers) adopted."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class LLMRequest(BaseModel):
    """One completion request to a provider."""

    model_config = ConfigDict(frozen=True)

    model: str
    messages: list[Message]
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    tools: list[ToolDefinition] = Field(default_factory=list)
    # A JSON schema the answer must follow (structured output), where the vendor supports it.
    response_schema: dict[str, Any] | None = None

    def sampling(self, *, temperature: str, max_tokens: str, stop: str) -> dict[str, Any]:
        """The sampling settings this request sets, under the vendor's names for them."""
        chosen = {temperature: self.temperature, max_tokens: self.max_tokens, stop: self.stop or None}
        return {name: value for name, value in chosen.items() if value is not None}


# Vendors with no JSON-schema response format of their own (Anthropic, Bedrock) answer a
# request with a `response_schema` through this tool, forced: its input is the answer. A
# tool's input is an object, so a schema of another type is wrapped as {"value": ...}. The
# name is reserved: an agent file's tools cannot take it.
ANSWER_TOOL_NAME = "final_answer"
ANSWER_TOOL_DESCRIPTION = "Give the final answer: its input is the answer, following the required schema."
_WRAPPED_KEY = "value"


def answer_tool_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The input schema of the forced answer tool for `schema` (an object schema as is)."""
    if schema.get("type") == "object":
        return schema
    return {"type": "object", "properties": {_WRAPPED_KEY: schema}, "required": [_WRAPPED_KEY]}


def answer_from_tool(arguments: dict[str, Any], schema: dict[str, Any]) -> str:
    """The answer's JSON text from the forced answer tool's `arguments`."""
    if schema.get("type") == "object":
        return json.dumps(arguments)
    return json.dumps(arguments.get(_WRAPPED_KEY))


class Completion(BaseModel):
    """A provider's whole answer. `cost_usd` is filled in by the runtime from the pricing
    table (None: no known price)."""

    model_config = ConfigDict(frozen=True)

    text: str
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = None
    latency_ms: float | None = None
    request_id: str | None = None
    # The answer parsed, when it was checked against the agent's `output_schema` (set by the
    # agent loop, not by providers; never journaled: a replay checks the text again).
    output_json: Any = None


@dataclass(slots=True)
class Spend:
    """Tokens and cost of model calls, counted as they are made (a coordinating agent's own
    calls, or every call an execution made in a process, whatever its end)."""

    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None

    def add(self, completion: Completion) -> None:
        """Count one more call."""
        self.usage = self.usage + completion.usage
        self.cost_usd = add_cost(self.cost_usd, completion.cost_usd)

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.usage + other.usage, add_cost(self.cost_usd, other.cost_usd))


def add_cost(first: float | None, second: float | None) -> float | None:
    """The sum of two costs, None only when neither is known."""
    if first is None and second is None:
        return None
    return (first or 0.0) + (second or 0.0)


class TextDelta(BaseModel):
    """A piece of the answer's text, as a stream delivers it."""

    model_config = ConfigDict(frozen=True)

    text: str


StreamItem = TextDelta | Completion
