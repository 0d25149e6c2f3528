"""What one tool call costs the agent loop, apart from the tool itself.

Three measures, each over `--count` runs after a warm-up:
- `run_tool_calls`: one call of an in-process tool through the loop's tool step (schema
  check, timeout wrapper, result cap, record, tool message), minus the tool's own time
  (measured inside the tool);
- `agent loop`: a whole `run_agent` with one round of one tool call, minus the same run
  with no tool call and minus the tool's own time: the loop's extra cost per call,
  including the second provider request it builds (the `scripted` provider answers, so
  no network is in the number);
- the peer in the same run: the round trip of one call to a FastMCP server on loopback
  over streamable HTTP through our MCP adapter (what a real tool adds, for scale).

Run: .venv/bin/python bench/tools.py [--count 2000] [--mcp-count 300]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentrunner.adapters.providers.offline import ScriptedProvider
from agentrunner.adapters.tools.mcp import McpServer
from agentrunner.domain.agent import AgentConfig, ToolConfig
from agentrunner.domain.llm import LLMRequest, ToolCall, ToolDefinition
from agentrunner.ports.tools import Repeatable, ToolContext
from agentrunner.runtime.agent_run import run_agent
from agentrunner.runtime.tool_calls import ToolBudget, run_tool_calls

CONTEXT = ToolContext(agent="bench", execution_id="e", session_id=None, trace_id="t")
WARM_UP = 100


class NoopTool:
    """Answers at once and keeps how long its own body took."""

    def __init__(self) -> None:
        self.definition = ToolDefinition(
            name="lookup",
            parameters={"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        )
        self.timeout_seconds = 30.0
        self.own_seconds = 0.0
        self.repeatable = Repeatable.ALWAYS

    def repeatable_call(self, arguments: dict[str, Any]) -> bool:
        return True

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> str:
        started = time.perf_counter()
        answer = f"found {arguments['q']}"
        self.own_seconds += time.perf_counter() - started
        return answer


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99


async def tool_step(count: int) -> list[float]:
    tool = NoopTool()
    tools = {"lookup": tool}
    calls = [ToolCall(id="c1", name="lookup", arguments={"q": "x"})]
    samples = []
    for index in range(count + WARM_UP):
        tool.own_seconds = 0.0
        started = time.perf_counter()
        await run_tool_calls(calls, tools, CONTEXT, budget=ToolBudget(10), iteration=1, max_chars=20000)
        if index >= WARM_UP:
            samples.append(time.perf_counter() - started - tool.own_seconds)
    return samples


def _config() -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "name": "bench",
            "agent_type": "b",
            "execution_mode": "autonomous",
            "llm_config": {"provider": "scripted", "model": "s"},
        }
    )


async def loop_overhead(count: int) -> list[float]:
    config = _config()
    tool = NoopTool()

    def with_call(request: LLMRequest) -> Any:
        if any(m.role == "tool" for m in request.messages):
            return "done"
        return {"tool_calls": [{"name": "lookup", "arguments": {"q": "x"}}]}

    def answer(request: LLMRequest) -> Any:
        return "done"

    samples = []
    for index in range(count + WARM_UP):
        plain = ScriptedProvider(answer)
        started = time.perf_counter()
        await run_agent(config, plain, {"prompt": "go"}, tools=[tool], context=CONTEXT)
        baseline = time.perf_counter() - started
        tool.own_seconds = 0.0
        calling = ScriptedProvider(with_call)
        started = time.perf_counter()
        await run_agent(config, calling, {"prompt": "go"}, tools=[tool], context=CONTEXT)
        if index >= WARM_UP:
            samples.append(time.perf_counter() - started - baseline - tool.own_seconds)
    return samples


async def mcp_round_trip(count: int) -> list[float]:
    from tests.mcp_server import McpHttpServer  # noqa: PLC0415 - the test server, only for this peer

    logging.getLogger("mcp").setLevel(logging.WARNING)
    with McpHttpServer() as server:
        mcp = McpServer(ToolConfig(name="kit", type="mcp", url=server.url), connect_timeout_seconds=10)
        await mcp.connect()
        samples = []
        try:
            for index in range(count + 20):
                started = time.perf_counter()
                await mcp.call("add", {"a": 1, "b": 2})
                if index >= 20:
                    samples.append(time.perf_counter() - started)
        finally:
            await mcp.close()
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--mcp-count", type=int, default=300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = [
        ("run_tool_calls, 1 call, minus the tool", await tool_step(args.count)),
        ("agent loop, 1 call round, minus run without it and the tool", await loop_overhead(args.count)),
    ]
    if args.mcp_count:
        rows.append(("peer: MCP call round trip (FastMCP, loopback HTTP)", await mcp_round_trip(args.mcp_count)))
    print(f"python {platform.python_version()} on {platform.machine()}, count={args.count}")
    print(f"{'measure':<62} {'p50 µs':>10} {'p99 µs':>10}")
    for name, samples in rows:
        p50, p99 = percentiles(samples)
        print(f"{name:<62} {p50 * 1e6:>10.1f} {p99 * 1e6:>10.1f}")


if __name__ == "__main__":
    asyncio.run(main())
