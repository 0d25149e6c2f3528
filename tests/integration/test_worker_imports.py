"""What a worker process loads: the A2A SDK (protobuf types, its server) and the MCP
server are the orchestrator's, and a process that runs worker pools only (`serve
autonomous`, ...) builds no orchestrator app: it never imports them (~10 MB of memory and
part of the start-up of each worker, measured by bench/scale_agents.py: a `serve
autonomous` process 145 MB resident when it built every role's app, 133 MB now); nor the
MCP SDK while none of its agents has an MCP tool (a tenth of its start-up CPU); and how
its start spends the garbage collector's time (one collection, before its heap is frozen)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from tests.contract.conftest import RABBITMQ_URL
from tests.e2e.test_cluster import _delete_queues
from tests.integration.processes import echo_worker_env, spawn_worker

# The A2A SDK and our A2A and MCP servers (the orchestrator's), and the MCP SDK (whoever
# opens an MCP session: agents with MCP tools, the orchestrator's MCP server).
SERVERS = ("a2a.", "agentrunner.api.a2a", "agentrunner.api.mcp_server", "agentrunner.adapters.tools.a2a", "mcp.")
SDKS = ("a2a", "mcp")


def test_a_worker_process_imports_no_a2a_sdk_nor_mcp_server_until_it_serves_the_orchestrator(tmp_path: Path) -> None:
    probe = (
        "import asyncio, sys\n"
        f"SERVERS = {SERVERS!r}\n"
        "from agentrunner.node import Node\n"
        "from agentrunner.settings import Settings\n"
        "def loaded():\n"
        "    return sorted(n for n in sys.modules if n in ('a2a', 'mcp') or n.startswith(SERVERS))\n"
        "async def main():\n"
        f"    node = Node(Settings(_env_file=None, data_dir={str(tmp_path)!r}, agents_dir={str(tmp_path)!r}))\n"
        "    async with node.running():\n"
        "        node.health_app()  # what a process of worker pools serves\n"
        "        print('loaded:', loaded())\n"
        "        node.apps()['orchestrator']  # an HTTP role's app, built when read\n"
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


# Loaded before anything else by the worker process (on its PYTHONPATH): writes the
# modules it has imported when it exits, and what its garbage collector did (each
# collection's generation and how many objects were frozen then) and how it stands at the end.
SITECUSTOMIZE = """
import atexit, gc, json, os, sys
collections = []
gc.callbacks.append(
    lambda phase, info: phase == "start" and collections.append((info["generation"], gc.get_freeze_count()))
)
def written():
    open(os.environ["MODULES_OUT"], "w").write("\\n".join(sorted(sys.modules)))
    frozen = gc.get_freeze_count()
    # Before the start-up heap was frozen: while fewer objects were frozen than at the end.
    before_freeze = [(generation, then) for generation, then in collections if then < frozen]
    collector = {"before_freeze": before_freeze, "frozen": frozen, "enabled": gc.isenabled()}
    open(os.environ["MODULES_OUT"] + ".gc", "w").write(json.dumps(collector))
atexit.register(written)
"""


async def test_a_worker_process_serving_its_pools_imports_no_a2a_sdk_nor_mcp_server(
    tmp_path: Path, postgres_url: str
) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    prefix = f"test-imports-{uuid.uuid4().hex[:8]}"
    env = echo_worker_env(
        tmp_path,
        postgres_url,
        RABBITMQ_URL,
        RABBITMQ_EXCHANGE_PREFIX=prefix,
        PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), *sys.path]),
        MODULES_OUT=str(tmp_path / "modules.txt"),
    )
    worker, port = spawn_worker(env, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:
            while True:
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()
                assert time.monotonic() < deadline, "the worker was not ready within 60 s"
                try:
                    if (await client.get("/health/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 60) == 0, (tmp_path / "worker.log").read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        await _delete_queues(prefix)  # nothing of this test left on the shared broker

    modules = (tmp_path / "modules.txt").read_text().split()
    assert "agentrunner.runtime.worker" in modules  # it ran its pools
    assert [name for name in modules if name in SDKS or name.startswith(SERVERS)] == []
    # Its database is at the schema's head: nothing to migrate, so no Alembic either.
    assert [name for name in modules if name == "alembic" or name.startswith("alembic.")] == []
    # Its start walked the heap once, before freezing it (with the collector on, hundreds of
    # collections, 40 of them full: a quarter of the start's CPU), and only what the node's
    # start made: its imports were frozen before (walking them was 100-160 ms of the start).
    # The collector is on once it served.
    collector = json.loads((tmp_path / "modules.txt.gc").read_text())
    assert collector["frozen"] > 10_000
    full = [frozen_then for generation, frozen_then in collector["before_freeze"] if generation == 2]
    assert len(full) == 1, collector["before_freeze"]
    assert full[0] > 10_000, "the imports were walked by the start's collection"
    assert len(collector["before_freeze"]) < 20, collector["before_freeze"]
    assert collector["enabled"] is True
