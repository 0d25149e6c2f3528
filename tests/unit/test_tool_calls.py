"""The agent loop's handling of tool calls, with tools defined here: concurrency, the
per-execution cap, schema checks, time and size limits, results the model can read."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import ValidationError

from agentrunner.adapters.providers.offline import ScriptedProvider, scripted_reply
from agentrunner.adapters.tools.builtin import host_allowed
from agentrunner.domain.agent import AgentConfig, ToolConfig
from agentrunner.domain.execution import ToolCallRecord
from agentrunner.domain.llm import LLMRequest, ToolCall, ToolDefinition
from agentrunner.ports.tools import Repeatable, ToolContext
from agentrunner.runtime.agent_run import run_agent
from agentrunner.runtime.tool_calls import ToolBudget, capped, run_tool_calls, truncation_marker

CONTEXT = ToolContext(agent="a", execution_id="e", session_id=None, trace_id="t")


class EchoTool:
    """Answers with what `answer` returns for the arguments, after `delay` seconds."""

    def __init__(self, name: str, answer: Any = None, *, delay: float = 0.0, timeout: float = 5.0) -> None:
        self.definition = ToolDefinition(
            name=name,
            parameters={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        )
        self.timeout_seconds = timeout
        self._answer = answer
        self._delay = delay
        self.calls = 0
        self.repeatable = Repeatable.NEVER

    def repeatable_call(self, arguments: dict[str, Any]) -> bool:
        return False

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        self.calls += 1
        await asyncio.sleep(self._delay)
        if isinstance(self._answer, Exception):
            raise self._answer
        return self._answer if self._answer is not None else f"n={arguments['n']}"


def _calls(*names: str, n: Any = 1) -> list[ToolCall]:
    return [ToolCall(id=f"c{i}", name=name, arguments={"n": n}) for i, name in enumerate(names)]


async def _run(calls: list[ToolCall], *tools: EchoTool, left: int = 10, max_chars: int = 1000) -> list[str]:
    messages = await run_tool_calls(
        calls, {t.definition.name: t for t in tools}, CONTEXT, budget=ToolBudget(left), iteration=1, max_chars=max_chars
    )
    assert [m.tool_call_id for m in messages] == [c.id for c in calls]
    return [m.content for m in messages]


def test_a_long_result_is_cut_with_a_marker_saying_how_much() -> None:
    assert capped("x" * 10, 10) == "x" * 10
    assert capped("x" * 25, 10) == "x" * 10 + truncation_marker(10, 25)
    assert "10 of 25 characters" in truncation_marker(10, 25)


async def test_a_result_over_the_cap_reaches_the_model_truncated() -> None:
    [content] = await _run(_calls("t"), EchoTool("t", "y" * 500), max_chars=100)

    assert content.startswith("y" * 100)
    assert content.endswith(truncation_marker(100, 500))


async def test_independent_calls_overlap() -> None:
    slow = EchoTool("slow", delay=0.3)
    started = asyncio.get_running_loop().time()

    results = await _run(_calls("slow", "slow", "slow"), slow)

    assert asyncio.get_running_loop().time() - started < 0.6
    assert results == ["n=1"] * 3


async def test_calls_past_the_executions_cap_are_refused_and_not_run() -> None:
    tool = EchoTool("t")
    budget = ToolBudget(2)
    messages = await run_tool_calls(
        _calls("t", "t", "t"), {"t": tool}, CONTEXT, budget=budget, iteration=1, max_chars=99
    )

    assert tool.calls == 2
    assert messages[2].is_error
    assert "max_tool_calls" in messages[2].content
    assert budget.left == 0


async def test_arguments_are_checked_against_the_schema_before_the_call() -> None:
    tool = EchoTool("t")

    [content] = await _run(_calls("t", n="three"), tool)

    assert tool.calls == 0
    assert content.startswith("error: invalid arguments: n: 'three' is not of type 'integer'")


async def test_raising_timing_out_and_unjsonable_results_are_errors_for_the_model() -> None:
    contents = await _run(
        _calls("boom", "late", "odd", "gone"),
        EchoTool("boom", RuntimeError("disk full")),
        EchoTool("late", delay=1.0, timeout=0.05),
        EchoTool("odd", {1, 2}),
    )

    assert contents == [
        "error: RuntimeError: disk full",
        "error: timed out after 0.05 s",
        "error: TypeError: the tool returned a set, which is not JSON",
        "error: unknown tool 'gone'",
    ]


async def test_a_structured_result_is_sent_as_json() -> None:
    [content] = await _run(_calls("t"), EchoTool("t", {"temp": 18}))

    assert json.loads(content) == {"temp": 18}


def _config(**fields: Any) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "name": "a",
            "agent_type": "t",
            "execution_mode": "autonomous",
            "llm_config": {"provider": "scripted", "model": "s"},
        }
        | fields
    )


async def test_the_loop_feeds_results_back_sums_usage_and_records_every_call() -> None:
    def script(request: LLMRequest) -> Any:
        if not any(m.role == "tool" for m in request.messages):
            return {"text": "let me look", "tool_calls": [{"name": "t", "arguments": {"n": 7}}]}
        return "it is " + request.messages[-1].content

    records: list[ToolCallRecord] = []

    async def record(entry: ToolCallRecord) -> None:
        records.append(entry)

    provider = ScriptedProvider(script)
    answer = await run_agent(_config(), provider, {"prompt": "go"}, tools=[EchoTool("t")], on_tool_call=record)

    assert answer.text == "it is n=7"
    first, second = provider.requests
    assert [t.name for t in first.tools] == ["t"]
    assert [m.role for m in second.messages] == ["user", "assistant", "tool"]
    assert answer.usage.input_tokens > first.messages[0].content.count(" ")  # both calls counted
    assert [(r.name, r.arguments, r.result, r.iteration) for r in records] == [("t", {"n": 7}, "n=7", 1)]


def test_a_scripted_dict_reply_asks_for_tool_calls() -> None:
    completion = scripted_reply({"text": "hm", "tool_calls": [{"name": "x", "arguments": {"q": 1}}, {"name": "y"}]})

    assert [(c.id, c.name, c.arguments) for c in completion.tool_calls] == [
        ("call_1", "x", {"q": 1}),
        ("call_2", "y", {}),
    ]
    assert completion.finish_reason == "tool_calls"


def test_a_tool_entry_takes_a_url_or_a_command_not_both() -> None:
    with pytest.raises(ValidationError, match="either 'url' or 'command'"):
        ToolConfig(name="k", type="mcp", url="http://x/mcp", command="srv")

    stdio = ToolConfig(name="k", type="mcp", command="python", args=["-m", "srv"])
    assert stdio.argv == ["python", "-m", "srv"]
    assert ToolConfig(name="k", type="mcp", command=["srv", "--stdio"]).argv == ["srv", "--stdio"]
    assert ToolConfig(name="k", type="mcp", url="http://x/sse").http_transport == "sse"
    assert ToolConfig(name="k", type="mcp", url="http://x/mcp").http_transport == "streamable_http"
    assert ToolConfig(name="k", type="mcp", url="http://x/a", transport="sse").http_transport == "sse"


def test_the_loop_settings_have_their_defaults() -> None:
    config = _config()

    assert (config.max_tool_iterations, config.max_tool_calls, config.tool_result_max_chars) == (10, 50, 20000)
    assert ToolConfig(name="t").timeout_seconds == 30


@pytest.mark.parametrize(
    ("host", "allowed", "expected"),
    [
        ("api.example.com", ["api.example.com"], True),
        ("API.example.com", ["api.example.com"], True),
        ("a.example.com", ["*.example.com"], True),
        ("example.com", ["*.example.com"], False),
        ("evil-example.com", ["*.example.com"], False),
        ("other.com", [], False),
    ],
)
def test_http_request_hosts_are_matched_exactly_or_by_subdomain(host: str, allowed: list[str], expected: bool) -> None:
    assert host_allowed(host, allowed) is expected


def test_a_secret_header_must_reference_the_environment() -> None:
    with pytest.raises(ValidationError, match="never stored in the clear"):
        ToolConfig(name="k", type="mcp", url="http://x/mcp", headers={"Authorization": "Bearer abc123"})

    entry = ToolConfig(
        name="k", type="mcp", url="http://x/mcp", headers={"Authorization": "Bearer ${KB_TOKEN}", "X-Team": "support"}
    )
    assert entry.headers["Authorization"] == "Bearer ${KB_TOKEN}"
