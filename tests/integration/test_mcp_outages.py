"""MCP servers that do not answer: a node keeps serving while it tries them again (its
event loop never blocked), tries each with growing waits, and logs each outage twice in
all: when it starts and when it ends."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from tests.integration.conftest import node_on
from tests.mcp_server import McpHttpServer
from tests.ports import free_port

UNREACHABLE = "MCP server unreachable, trying again with growing waits (up to MCP_RETRY_SECONDS)"
ANSWERS = "MCP server answers again"


def agent_file(name: str, url: str) -> str:
    return (
        f"name: {name}\nagent_type: t\nexecution_mode: autonomous\n"
        "llm_config: {provider: scripted, model: s}\n"
        f"tools:\n  - {{name: kit, type: mcp, url: '{url}'}}\n"
    )


@contextmanager
def hanging_up_server() -> Iterator[tuple[str, list[float]]]:
    """A loopback port that accepts each connection and closes it at once, in a thread of
    its own (so the times are the client's, whatever the test's loop does): yields its
    MCP URL and the monotonic times of the connections."""
    times: list[float] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)

    def serve() -> None:
        while listener.fileno() != -1:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            times.append(time.monotonic())
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/mcp", times
    finally:
        listener.close()
        thread.join(5)


def attempts(times: list[float]) -> list[float]:
    """Connection times grouped into tries (a try may open more than one connection)."""
    tries: list[float] = []
    for at in times:
        if not tries or at - tries[-1] > 0.5:
            tries.append(at)
    return tries


async def until(condition: Callable[[], bool], seconds: float = 30) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.05)


def warnings_about(entries: Sequence[Mapping[str, Any]], message: str) -> list[str]:
    return [entry["endpoint"] for entry in entries if entry["event"] == message]


async def test_unreachable_servers_are_tried_with_growing_waits_and_never_block_the_loop(tmp_path: Path) -> None:
    # 40 servers that refuse, each its own endpoint: before the fix, each try of them all
    # built 40 TLS contexts on the loop (~1 s of block); and one that hangs up, timed.
    refused = [f"http://127.0.0.1:{free_port()}/mcp" for _ in range(40)]
    files = {f"r{i}.yml": agent_file(f"r{i}", url) for i, url in enumerate(refused)}
    with hanging_up_server() as (timed, times), capture_logs() as entries:
        files["timed.yml"] = agent_file("timed", timed)
        async with node_on("memory", tmp_path, files, mcp_retry_seconds=3, mcp_connect_timeout_seconds=2) as node:
            began = time.thread_time()
            await until(lambda: len(attempts(times)) >= 4)
            loop_cpu = time.thread_time() - began
            max_lag = node.loop_lag.max_lag_seconds

    first, second, third, fourth = attempts(times)[:4]
    # Waits of 1 s, 2 s, then the 3 s cap, each drawn in [3/4, 1] of its step: a busy
    # machine can only make them longer.
    assert second - first >= 0.75
    assert third - second >= 1.5
    assert fourth - third >= 2.25
    # Every endpoint was said unreachable once, though tried again and again.
    said = warnings_about(entries, UNREACHABLE)
    assert sorted(said) == sorted([*refused, timed])
    # The loop did little work of its own (0.3 s of its thread's CPU here, over four tries);
    # building the 40 TLS contexts on it took about a second of CPU each try. CPU, not the
    # loop's lag: a loaded machine (the suite spread over three processes) delays a wake-up
    # by up to a second (0.93 s seen) without anything blocking the loop.
    assert loop_cpu < 1.5, loop_cpu
    assert max_lag < 2.0


async def test_an_outage_is_logged_when_it_starts_and_when_it_ends_with_its_length(tmp_path: Path) -> None:
    late = McpHttpServer()  # its port is chosen, nothing listens yet
    with capture_logs() as entries:
        async with node_on("memory", tmp_path, {"kit.yml": agent_file("kit", late.url)}, mcp_retry_seconds=1) as node:
            await until(lambda: (outage := node.tools.outages.of(late.url)) is not None and outage.tries >= 3)
            with late:
                await until(lambda: "kit__add" in node.registry.get("kit").tools)

    assert warnings_about(entries, UNREACHABLE) == [late.url]
    [ended] = [entry for entry in entries if entry["event"] == ANSWERS]
    assert ended["endpoint"] == late.url
    assert ended["tries"] >= 3
    assert ended["outage_seconds"] >= 1.0  # three tries, two waits of at least 0.75 s
