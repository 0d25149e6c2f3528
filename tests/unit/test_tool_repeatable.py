"""Whether a tool's call may be made again after a crash left its outcome unknown: the
built-in tools' own rules (http_request per call, from its method), the MCP annotations
rule, the agent file's `idempotent` override, a plugin that says nothing, and the agent's
description showing it per offered tool."""

from __future__ import annotations

from typing import Any

import pytest
from mcp.types import ToolAnnotations
from pydantic import ValidationError

from agentrunner.adapters.bus.memory import InMemoryEventBus
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.adapters.tools.builtin import BuiltinTool, builtin_tool
from agentrunner.adapters.tools.declared import declared
from agentrunner.adapters.tools.mcp_annotations import repeatable_from
from agentrunner.api.views import agent_detail_view
from agentrunner.domain.agent import AgentConfig, ToolConfig
from agentrunner.domain.llm import ToolDefinition
from agentrunner.ports.tools import Repeatable, ToolContext
from agentrunner.runtime.registry import AgentRegistry, AgentStatus, RegisteredAgent


def builtin(name: str, **entry: Any) -> BuiltinTool:
    tool = builtin_tool(
        ToolConfig.model_validate({"name": name, **entry}),
        store=SQLStateStore("sqlite+aiosqlite:///:memory:"),
        bus=InMemoryEventBus(),
    )
    assert tool is not None
    return tool


@pytest.mark.parametrize(
    ("name", "repeatable"),
    [
        ("current_time", Repeatable.ALWAYS),
        ("get_state", Repeatable.ALWAYS),
        ("set_state", Repeatable.NEVER),
        ("publish_event", Repeatable.NEVER),
        ("http_request", Repeatable.ALWAYS),  # GET only, by default
    ],
)
def test_each_builtin_tool_says_whether_its_calls_may_be_repeated(name: str, repeatable: Repeatable) -> None:
    tool = builtin(name)

    assert tool.repeatable is repeatable
    assert tool.repeatable_call({"key": "k", "value": 1, "topic": "a.b", "url": "https://x/"}) is (
        repeatable is Repeatable.ALWAYS
    )


@pytest.mark.parametrize(
    ("arguments", "repeatable"),
    [
        ({}, True),  # GET by default
        ({"method": "GET"}, True),
        ({"method": "get"}, True),  # sent upper-cased, judged the same
        ({"method": "HEAD"}, True),
        ({"method": None}, True),
        ({"method": "POST"}, False),
        ({"method": "PUT"}, False),  # idempotent by RFC 9110, not by every API
        ({"method": "DELETE"}, False),
        # Not a method this entry allows: refused before sending anything, as a repeat would be.
        ({"method": "PATCH"}, True),
        ({"method": ["GET"]}, True),
        ({"method": 42}, True),
    ],
)
def test_http_request_allowing_more_than_get_repeats_its_get_and_head_calls_only(
    arguments: dict[str, Any], repeatable: bool
) -> None:
    tool = builtin(
        "http_request", allowed_hosts=["example.com"], allowed_methods=["GET", "HEAD", "POST", "PUT", "DELETE"]
    )

    assert tool.repeatable is Repeatable.PER_CALL
    assert tool.repeatable_call({"url": "https://example.com/", **arguments}) is repeatable


def test_http_request_allowing_get_and_head_only_repeats_every_call() -> None:
    tool = builtin("http_request", allowed_hosts=["example.com"], allowed_methods=["GET", "HEAD"])

    assert tool.repeatable is Repeatable.ALWAYS
    assert tool.repeatable_call({"url": "https://example.com/", "method": "POST"})  # refused, sends nothing


@pytest.mark.parametrize(
    ("annotations", "repeatable"),
    [
        (None, Repeatable.NEVER),
        (ToolAnnotations(), Repeatable.NEVER),
        (ToolAnnotations(readOnlyHint=True), Repeatable.ALWAYS),
        (ToolAnnotations(readOnlyHint=True, idempotentHint=False, destructiveHint=True), Repeatable.ALWAYS),
        (ToolAnnotations(idempotentHint=True), Repeatable.ALWAYS),
        (ToolAnnotations(idempotentHint=True, destructiveHint=True), Repeatable.ALWAYS),
        (ToolAnnotations(readOnlyHint=False, idempotentHint=False), Repeatable.NEVER),
        (ToolAnnotations(destructiveHint=False), Repeatable.NEVER),
        (ToolAnnotations(destructiveHint=True), Repeatable.NEVER),
        (ToolAnnotations(openWorldHint=False, title="safe, trust me"), Repeatable.NEVER),
    ],
)
def test_an_mcp_tool_is_repeatable_when_read_only_or_idempotent_and_never_else(
    annotations: ToolAnnotations | None, repeatable: Repeatable
) -> None:
    assert repeatable_from(annotations) is repeatable


@pytest.mark.parametrize("idempotent", [True, False])
@pytest.mark.parametrize("name", ["current_time", "publish_event", "http_request"])
def test_the_entrys_idempotent_overrides_what_a_builtin_says(name: str, idempotent: bool) -> None:
    entry = ToolConfig.model_validate({"name": name, "idempotent": idempotent, "allowed_methods": ["GET", "POST"]})
    tool = declared(builtin(name, allowed_methods=["GET", "POST"]), entry)

    assert tool.repeatable is (Repeatable.ALWAYS if idempotent else Repeatable.NEVER)
    assert tool.repeatable_call({"method": "POST"}) is idempotent
    assert tool.repeatable_call({"method": "GET"}) is idempotent
    assert tool.definition.name == name


class OlderPlugin:
    """A tool of an installed package written before tools said whether to repeat them."""

    definition = ToolDefinition(name="word_count", parameters={"type": "object"})
    timeout_seconds = 5.0

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> str:
        return "3 words"


async def test_a_tool_that_does_not_say_is_never_repeated_unless_the_entry_says_so() -> None:
    silent = declared(OlderPlugin(), ToolConfig(name="word_count"))
    vouched = declared(OlderPlugin(), ToolConfig(name="word_count", idempotent=True))
    context = ToolContext(agent="a", execution_id="e", session_id=None, trace_id="t")

    assert (silent.repeatable, silent.repeatable_call({})) == (Repeatable.NEVER, False)
    assert (vouched.repeatable, vouched.repeatable_call({})) == (Repeatable.ALWAYS, True)
    assert await silent.call({}, context) == "3 words"
    assert (silent.definition.name, silent.timeout_seconds) == ("word_count", 5.0)


def test_a_tool_entry_says_idempotent_true_or_false_or_nothing() -> None:
    assert ToolConfig(name="t").idempotent is None
    assert ToolConfig.model_validate({"name": "t", "idempotent": False}).idempotent is False
    with pytest.raises(ValidationError, match="idempotent"):
        ToolConfig.model_validate({"name": "t", "idempotent": "perhaps"})


def test_the_agents_description_shows_per_offered_tool_whether_it_may_be_repeated() -> None:
    config = AgentConfig.model_validate(
        {
            "name": "smith",
            "agent_type": "t",
            "execution_mode": "autonomous",
            "llm_config": {"provider": "echo", "model": "e"},
            "tools": [{"name": "current_time"}, {"name": "http_request"}, {"name": "kit", "type": "mcp", "url": "x"}],
        }
    )
    registry = AgentRegistry(agents={"smith": RegisteredAgent("smith", "smith.yml", config, AgentStatus.AVAILABLE)})

    registry.apply_tools(
        {"smith": ["current_time", "http_request", "kit__send", "kit__unsaid"]},
        {},
        {
            "smith": {
                "current_time": Repeatable.ALWAYS,
                "http_request": Repeatable.PER_CALL,
                "kit__send": Repeatable.NEVER,
            }
        },
    )
    shown = agent_detail_view(registry.get("smith")).model_dump(mode="json")

    assert shown["offered_tools_repeatable"] == {
        "current_time": "always",
        "http_request": "per_call",
        "kit__send": "never",
        "kit__unsaid": "never",  # a tool the catalog said nothing of is not repeated
    }
