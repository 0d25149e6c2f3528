"""What an eval run adds to the invocations it makes: `--cases` cases of a suite run by the
eval runner (`runtime/evals.py`: each case an invocation, its checks, the run record saved
after every case), next to the same number of invocations made directly through the
orchestrator with the same concurrency (the peer), in the same run, on one embedded node
(SQLite, the in-memory bus) and the keyless `echo` agent, so the model costs nothing and the
difference is the runner's. Turns alternate (peer, eval, peer, eval...); the table shows
the median of `--turns`.

Run: .venv/bin/python bench/evals.py [--cases 100] [--concurrency 8] [--turns 3]
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

from agentrunner.logs import configure_logging
from agentrunner.node import Node
from agentrunner.settings import Settings

AGENT = "name: echoer\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"


def _suite(cases: int) -> str:
    lines = ["agent: echoer", "cases:"]
    for index in range(cases):
        lines += [
            f"  - name: case {index}",
            f"    task_data: {{prompt: ticket {index} about a refund}}",
            "    expect: [{contains: refund}, {regex: 'ticket \\d+'}, {max_latency_ms: 60000}]",
        ]
    return "\n".join(lines) + "\n"


async def _direct(node: Node, cases: int, concurrency: int) -> float:
    slots = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with slots:
            await node.orchestrator.invoke("echoer", {"prompt": f"ticket {index} about a refund"}, wait=60)

    started = time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(cases)))
    return time.perf_counter() - started


async def _eval(node: Node, concurrency: int) -> float:
    started = time.perf_counter()
    await node.evals.start("bench", concurrency=concurrency)
    # The runner's task ends when the run is saved ended: awaited, not polled (a poll reads
    # the whole record, which would be measured too).
    await asyncio.gather(*node.evals._tasks)
    return time.perf_counter() - started


async def main(cases: int, concurrency: int, turns: int) -> None:
    configure_logging("bench", "WARNING")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "agents").mkdir()
        (root / "evals").mkdir()
        (root / "agents" / "echoer.yml").write_text(AGENT)
        (root / "evals" / "bench.yml").write_text(_suite(cases))
        node = Node(Settings(_env_file=None, agents_dir=root / "agents", data_dir=root, log_level="WARNING"))
        async with node.running():
            await _direct(node, 20, concurrency)  # warm up
            direct, evaluated = [], []
            for _ in range(turns):
                direct.append(await _direct(node, cases, concurrency))
                evaluated.append(await _eval(node, concurrency))
    peer, ours = statistics.median(direct), statistics.median(evaluated)
    print(f"load {os.getloadavg()[0]:.1f}, {cases} cases, concurrency {concurrency}, median of {turns} turns")
    print(f"{'':<34}{'total s':>10}{'per case ms':>14}")
    print(f"{'direct invocations (peer)':<34}{peer:>10.2f}{peer / cases * 1000:>14.2f}")
    print(f"{'eval run (checks, run record)':<34}{ours:>10.2f}{ours / cases * 1000:>14.2f}")
    print(f"{'added per case':<34}{'':>10}{(ours - peer) / cases * 1000:>14.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--turns", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.cases, arguments.concurrency, arguments.turns))
