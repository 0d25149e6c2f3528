"""Work accepted while no worker runs waits in its agent's queue: the orchestrator declares
every agent's queue before it accepts anything (RabbitMQ would drop an event no queue is
bound for), so an invocation made before the first worker starts still runs once it does."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from agentrunner.adapters.state.urls import run_schema_command
from tests.integration.processes import role_processes
from tests.ports import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

AGENT = "name: late-worker\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"


def test_an_invocation_accepted_before_any_worker_runs_when_one_starts(tmp_path: Path, postgres_url: str) -> None:
    run_schema_command(postgres_url, "upgrade")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "late-worker.yml").write_text(AGENT)
    port = free_port()
    with role_processes(tmp_path, postgres_url, ORCHESTRATOR_PORT=str(port)) as roles:
        orchestrator = f"http://127.0.0.1:{port}"
        roles.serve("orchestrator", log="orchestrator.log")
        roles.wait_ready(orchestrator)
        with httpx.Client(base_url=orchestrator, timeout=30) as http:
            body = {"task_data": {"prompt": "kept for later"}, "wait": 0}
            execution_id = http.post("/agents/late-worker/invoke", json=body).json()["execution_id"]
            time.sleep(1.0)  # nothing consumes it meanwhile
            waiting = http.get(f"/executions/{execution_id}").json()

            roles.serve("autonomous", "--health-port", str(free_port()), log="worker.log")
            started = time.monotonic()
            while (record := http.get(f"/executions/{execution_id}").json())["status"] in ("queued", "running"):
                assert time.monotonic() - started < 30, roles.log_text()
                time.sleep(0.1)

    assert waiting["status"] == "queued"
    assert (record["status"], record["output"]) == ("succeeded", "kept for later")
