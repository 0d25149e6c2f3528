"""What an agent's online checks add to its executions: `--runs` invocations of an agent with
ten checks (contains, regex, json_subset, tool_not_called, max_cost_usd...), next to the same
invocations of the same agent without checks (the peer), in the same run, on one embedded
node (SQLite, the in-memory bus) and the keyless `echo` provider, so the model costs
nothing and the difference is the checks'. Turns alternate (peer, checked, ...); the table
shows the median of `--turns`. A second table times `checked()` alone on answers of 1 KB,
100 KB and 1 MB (the bound of the checked text).

Run: .venv/bin/python bench/checks.py [--runs 200] [--concurrency 8] [--turns 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentrunner.domain.agent_document import parse_agent_document
from agentrunner.domain.checks import Check, checked
from agentrunner.domain.execution import Execution, ExecutionStatus, utcnow
from agentrunner.logs import configure_logging
from agentrunner.node import Node
from agentrunner.settings import Settings

AGENT = "name: {name}\nagent_type: t\nexecution_mode: autonomous\nllm_config: {{provider: echo, model: echo}}\n"
CHECKS = """\
checks:
  - contains: ticket
  - contains: refund
  - regex: 'ticket \\d+'
  - regex: '(refund|return)s?'
  - name: no-secret
    regex: '(?i)sk-[a-z0-9]{20,}'
  - tool_not_called: issue_refund
  - max_cost_usd: 1
  - max_latency_ms: 600000
  - json_subset: {status: ok}
  - equals: never the answer
"""


async def _turn(node: Node, agent: str, runs: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            await node.orchestrator.invoke(agent, {"prompt": f"ticket {index} about a refund"}, wait=60)

    started = time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(runs)))
    return runs / (time.perf_counter() - started)


async def _platform(runs: int, concurrency: int, turns: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as workdir:
        agents = Path(workdir) / "agents"
        agents.mkdir()
        (agents / "plain.yml").write_text(AGENT.format(name="plain"))
        (agents / "checked.yml").write_text(AGENT.format(name="checked") + CHECKS)
        node = Node(Settings(_env_file=None, agents_dir=agents, data_dir=Path(workdir)))
        rates: dict[str, list[float]] = {"plain": [], "checked": []}
        async with node.running():
            await _turn(node, "plain", 10, concurrency)  # warm-up
            await _turn(node, "checked", 10, concurrency)
            for _ in range(turns):
                for agent in ("plain", "checked"):
                    rates[agent].append(await _turn(node, agent, runs, concurrency))
        return {agent: statistics.median(values) for agent, values in rates.items()}


def _alone() -> list[tuple[str, float]]:
    checks: list[Check] = parse_agent_document(AGENT.format(name="x") + CHECKS, "x.yml").config.checks
    figures = []
    for size in (1_000, 100_000, 1_000_000):
        execution = Execution(
            execution_id="e",
            agent="x",
            status=ExecutionStatus.SUCCEEDED,
            output=("ticket 12 about a refund " * (size // 25 + 1))[:size],
            trace_id="t",
            cost_usd=0.001,
            finished_at=utcnow(),
        )
        repeats = max(3, 2_000_000 // size)
        started = time.perf_counter()
        for _ in range(repeats):
            checked(execution, checks, "flag")
        figures.append((f"{size:,} characters", (time.perf_counter() - started) / repeats * 1000))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args()
    configure_logging("bench", "WARNING")
    load = os.getloadavg()[0]
    rates = asyncio.run(_platform(args.runs, args.concurrency, args.turns))
    print(f"load {load:.2f}; {args.runs} invocations x {args.turns} turns, concurrency {args.concurrency}")
    print(f"{'agent':<22}{'executions/s':>14}")
    print(f"{'no checks (peer)':<22}{rates['plain']:>14.1f}")
    print(f"{'ten checks':<22}{rates['checked']:>14.1f}")
    print(f"{'ratio':<22}{rates['checked'] / rates['plain']:>14.2f}")
    print()
    print(f"{'answer':<22}{'ten checks, ms':>16}")
    for label, milliseconds in _alone():
        print(f"{label:<22}{milliseconds:>16.3f}")


if __name__ == "__main__":
    main()
