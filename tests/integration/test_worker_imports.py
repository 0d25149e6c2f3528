"""What a worker process loads: the A2A SDK (protobuf types, its server) and the MCP
server are the orchestrator's, and a process that runs worker pools only (`serve
autonomous`, ...) builds no orchestrator app: it never imports them (~10 MB of memory and
part of the start-up of each worker, measured by bench/scale_agents.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SERVERS = ("a2a.", "agentrunner.api.a2a", "agentrunner.api.mcp_server", "agentrunner.adapters.tools.a2a")


def test_a_worker_process_imports_no_a2a_sdk_nor_mcp_server_until_it_serves_the_orchestrator(tmp_path: Path) -> None:
    probe = (
        "import asyncio, sys\n"
        f"SERVERS = {SERVERS!r}\n"
        "from agentrunner.node import Node\n"
        "from agentrunner.settings import Settings\n"
        "def loaded():\n"
        "    return sorted(n for n in sys.modules if n == 'a2a' or n.startswith(SERVERS))\n"
        "async def main():\n"
        f"    node = Node(Settings(_env_file=None, data_dir={str(tmp_path)!r}, agents_dir={str(tmp_path)!r}))\n"
        "    async with node.running():\n"
        "        node.health_app()  # what a process of worker pools serves\n"
        "        print('loaded:', loaded())\n"
        "        node.apps()  # the HTTP roles, the orchestrator's among them\n"
        "        print('loaded:', loaded())\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        check=False,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    worker, orchestrator = [line for line in done.stdout.splitlines() if line.startswith("loaded: ")]
    assert worker == "loaded: []"
    assert "'agentrunner.api.a2a'" in orchestrator
    assert "'agentrunner.api.mcp_server'" in orchestrator
