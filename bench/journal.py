"""What the journal of steps costs the agent loop: a model step and a tool step with the
journal on, next to the same step with it off, in the same run, embedded (SQLite) and
distributed (PostgreSQL, a scratch database dropped at the end).

The steps themselves cost next to nothing (the `scripted` provider answers at once; the tool
is in-process and answers at once), so the difference is the journal. A round of the loop (a
model step asking for a tool call, then that tool step) is two durable writes: the tool's
start, carrying the model step's outcome, then the tool's outcome; a last answer (a model
step alone) is one. Writes go through the store's group commit. Each measure: `--n` of it
one after the other, off and on in turns (p50, p99; the cost per step is the p50
difference over its steps), then `--loops` agent loops at once, each of `--rounds` rounds of one
tool call (the whole `run_agent`, as a worker runs it), as steps per second with the
journal off and on (concurrent writes share transactions there).

Run: .venv/bin/python bench/journal.py [--n 500] [--loops 16] [--rounds 10]
     [--postgres postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/agentrunner_test]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.state import DEFAULT_POSTGRES, scratch_postgres

from agentrunner.adapters.providers.offline import ScriptedProvider
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.llm import Completion, LLMRequest, Message, ToolCall, ToolDefinition
from agentrunner.ports.tools import Repeatable, ToolContext
from agentrunner.runtime.agent_run import run_agent
from agentrunner.runtime.journal import RunJournal
from agentrunner.runtime.llm_calls import complete_with_retries
from agentrunner.runtime.tool_calls import ToolBudget, run_tool_calls

WARM_UP = 50
CONTEXT = ToolContext(agent="bench", execution_id="e", session_id=None, trace_id="t")


class NoopTool:
    """Answers at once."""

    definition = ToolDefinition(name="lookup", parameters={"type": "object", "properties": {"q": {"type": "string"}}})
    timeout_seconds = 30.0
    repeatable = Repeatable.ALWAYS

    def repeatable_call(self, arguments: dict[str, Any]) -> bool:
        return True

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> str:
        return f"found {arguments.get('q')}"


def config(rounds: int) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "name": "bench",
            "agent_type": "t",
            "execution_mode": "autonomous",
            "llm_config": {"provider": "scripted", "model": "s"},
            "max_tool_iterations": rounds,
            "max_tool_calls": rounds,
        }
    )


def looping(rounds: int) -> Callable[[LLMRequest], Any]:
    """A model that asks for `rounds` tool calls one answer at a time, then answers."""

    def answer(request: LLMRequest) -> Any:
        done = sum(message.role == "tool" for message in request.messages)
        if done < rounds:
            return {"tool_calls": [{"id": f"c{done}", "name": "lookup", "arguments": {"q": str(done)}}]}
        return "done"

    return answer


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def timed(
    off: Callable[[], Awaitable[Any]], on: Callable[[], Awaitable[Any]], n: int
) -> tuple[list[float], list[float]]:
    """Seconds of each of `n` runs of `off` and of `on`, taken in turns, so both see the
    same machine (a busy moment slows both, not one)."""
    for _ in range(WARM_UP):
        await off()
        await on()
    seconds: tuple[list[float], list[float]] = ([], [])
    for _ in range(n):
        for step, into in ((off, seconds[0]), (on, seconds[1])):
            started = time.perf_counter()
            await step()
            into.append(time.perf_counter() - started)
    return seconds


def journal_of(store: SQLStateStore) -> RunJournal:
    return RunJournal(store, f"bench-{uuid.uuid4().hex}", model="s")


async def step_rows(store: SQLStateStore, n: int) -> list[tuple[str, int, list[float], list[float]]]:
    """(measure, steps in it, seconds off, seconds on): a round of the loop (a model step
    that asks for a tool call, and that tool step) and a last answer (a model step alone)."""
    cfg = config(1)
    tools = {"lookup": NoopTool()}
    call = ToolCall(id="c1", name="lookup", arguments={"q": "x"})
    asks = ScriptedProvider([{"tool_calls": [{"id": "c1", "name": "lookup", "arguments": {"q": "x"}}]}])
    answers = ScriptedProvider(["done"])
    request = LLMRequest(model="s", messages=[Message(role="user", content="hi")])

    def model(provider: ScriptedProvider) -> Callable[[], Awaitable[Completion]]:
        return lambda: complete_with_retries(provider, request, cfg.llm_config)

    async def round_(journal: RunJournal | None) -> None:
        if journal is None:
            await model(asks)()
        else:
            await journal.model_call(model(asks))
        await run_tool_calls(
            [call], tools, CONTEXT, budget=ToolBudget(left=1), iteration=1, max_chars=1000, journal=journal
        )

    async def last(journal: RunJournal) -> None:
        await journal.model_call(model(answers))
        await journal.flush()

    journal = journal_of(store)
    rounds = await timed(lambda: round_(None), lambda: round_(journal), n)
    lasts = await timed(model(answers), lambda: last(journal), n)
    return [("round: model + tool step", 2, *rounds), ("last answer: model step", 1, *lasts)]


async def loops_per_second(store: SQLStateStore | None, loops: int, rounds: int) -> float:
    """Steps per second of `loops` whole agent loops at once (journal on with `store`)."""
    cfg = config(rounds)

    async def one() -> None:
        provider = ScriptedProvider(looping(rounds))
        journal = journal_of(store) if store is not None else None
        await run_agent(cfg, provider, {"prompt": "go"}, tools=[NoopTool()], journal=journal)

    await asyncio.gather(*(one() for _ in range(2)))  # warm-up
    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(loops)))
    return loops * (2 * rounds + 1) / (time.perf_counter() - started)


async def bench(backend: str, url: str, args: argparse.Namespace) -> list[str]:
    store = SQLStateStore(url)
    await store.start()
    try:
        lines = []
        for name, steps, off, on in await step_rows(store, args.n):
            cost = (statistics.median(on) - statistics.median(off)) * 1000 / steps
            lines.append(
                f"| {backend} | {name} | {statistics.median(off) * 1000:.3f} | {statistics.median(on) * 1000:.3f} | "
                f"{percentile(on, 0.99) * 1000:.3f} | **{cost:.3f}** |"
            )
        off_rate = await loops_per_second(None, args.loops, args.rounds)
        on_rate = await loops_per_second(store, args.loops, args.rounds)
        lines.append(
            f"| {backend} | {args.loops} loops at once, steps/s | {off_rate:.0f} | {on_rate:.0f} | | "
            f"{(1 / on_rate - 1 / off_rate) * 1000:.3f} per step |"
        )
        return lines
    finally:
        await store.close()


async def main(args: argparse.Namespace) -> None:
    lines = []
    with tempfile.TemporaryDirectory(prefix="agentrunner-bench-") as folder:
        lines += await bench("embedded (SQLite)", f"sqlite+aiosqlite:///{folder}/bench.db", args)
    async with scratch_postgres(args.postgres) as (url, _):
        lines += await bench("distributed (PostgreSQL)", url.render_as_string(hide_password=False), args)
    print(f"journal cost per step, {args.n} steps each; Python {platform.python_version()}, {platform.machine()}")
    print()
    print("| backend | measure | off p50 (ms) | on p50 (ms) | on p99 (ms) | journal cost per step, p50 (ms) |")
    print("|---|---|---:|---:|---:|---:|")
    for line in lines:
        print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="steps per measure, one after the other")
    parser.add_argument("--loops", type=int, default=16, help="agent loops at once")
    parser.add_argument("--rounds", type=int, default=10, help="tool calls per loop, one per answer")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server to create the scratch database on")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parser.parse_args()))
