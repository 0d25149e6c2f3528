"""Webhooks out, on real processes (orchestrator + worker on PostgreSQL and RabbitMQ): a
receiver that fails twice then takes the record gets it three times, signed; every
attempt shows in GET /executions/{id}; an agent's own webhook_url serves runs started by
events; without WEBHOOK_SECRET a webhook_url is refused."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.adapters.state.urls import run_schema_command
from agentrunner.domain.webhook import SIGNATURE_HEADER, verify_signature
from tests.conftest import loopback_http
from tests.integration.processes import role_processes
from tests.ports import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

SECRET = "whsec-integration"


class Receiver:
    """A webhook receiver on a loopback port: answers 500 to the first `failures` POSTs of
    each path, then 200; keeps every request."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[tuple[str, dict[str, str], bytes, float]] = []
        self._lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @contextmanager
    def serving(self) -> Iterator[Receiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    receiver.requests.append((self.path, dict(self.headers.items()), body, time.time()))
                    seen = sum(path == self.path for path, *_ in receiver.requests)
                status = 500 if seen <= receiver.failures else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        with loopback_http(Handler) as self.port:
            yield self

    def posts(self, path: str) -> list[tuple[dict[str, str], bytes, float]]:
        with self._lock:
            return [(headers, body, at) for p, headers, body, at in self.requests if p == path]


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_failing_receiver_gets_the_signed_record_until_it_takes_it(tmp_path: Path, postgres_url: str) -> None:
    run_schema_command(postgres_url, "upgrade")
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "hooked.yml").write_text(
        "name: hooked\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"
    )
    with Receiver(failures=2).serving() as receiver:
        (agents / "listens.yml").write_text(
            "name: listens\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"
            f"event_subscriptions: ['orders.paid']\nwebhook_url: {receiver.url('/agent-hook')}\n"
        )
        port, bare = free_port(), free_port()
        url = f"http://127.0.0.1:{port}"
        # The receiver is a loopback http server: the operator's two explicit exceptions.
        env = {
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_BACKOFF_SECONDS": "0.3",
            "WEBHOOK_SWEEP_SECONDS": "0.1",
            "EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8",
            "WEBHOOK_ALLOW_HTTP": "true",
        }
        with role_processes(tmp_path, postgres_url, **env) as roles:
            roles.serve("orchestrator", log="orchestrator.log", ORCHESTRATOR_PORT=str(port))
            roles.serve("autonomous", "--health-port", str(free_port()), log="worker.log")
            roles.serve("orchestrator", log="unsigned.log", ORCHESTRATOR_PORT=str(bare), WEBHOOK_SECRET="")
            roles.wait_ready(url, f"http://127.0.0.1:{bare}")
            with httpx.Client(base_url=url, timeout=30) as http:
                body = {"task_data": {"prompt": "ship it"}, "wait": 0, "webhook_url": receiver.url("/hook")}
                execution_id = http.post("/agents/hooked/invoke", json=body).json()["execution_id"]
                http.post("/events", json={"topic": "orders.paid", "payload": {"prompt": "paid"}})
                refused = httpx.post(f"http://127.0.0.1:{bare}/agents/hooked/invoke", json=body, timeout=30)

                _wait_for(lambda: len(receiver.posts("/hook")) >= 3, 30, "three webhook attempts")
                _wait_for(lambda: len(receiver.posts("/agent-hook")) >= 3, 30, "the agent's webhook")
                _wait_for(
                    lambda: (http.get(f"/executions/{execution_id}").json()["webhook"] or {}).get("delivered_at"),
                    10,
                    "the delivery to be recorded",
                )
                record = http.get(f"/executions/{execution_id}").json()
                time.sleep(1.0)  # a delivered webhook is not sent again

    posts = receiver.posts("/hook")
    assert len(posts) == 3
    for headers, raw, at in posts:
        assert verify_signature(SECRET.encode(), headers[SIGNATURE_HEADER], raw, now=int(at))
        sent = json.loads(raw)
        assert sent["event"] == "execution.finished"
        assert (sent["execution"]["execution_id"], sent["execution"]["status"]) == (execution_id, "succeeded")
        assert sent["execution"]["output"] == "ship it"
    assert posts[2][2] - posts[1][2] >= posts[1][2] - posts[0][2] - 0.05  # waits double (0.3 s, then 0.6 s)
    attempts = record["webhook"]["attempts"]
    assert [a["status_code"] for a in attempts] == [500, 500, 200]
    assert attempts[0]["error"] == "HTTP 5xx"  # coarse: never the body of what answered
    assert attempts[2]["error"] is None
    assert record["webhook"]["url"] == receiver.url("/hook")
    assert record["webhook"]["next_attempt_at"] is None
    agent_posts = receiver.posts("/agent-hook")
    assert len(agent_posts) == 3
    assert json.loads(agent_posts[-1][1])["execution"]["agent"] == "listens"
    assert refused.status_code == 400
    assert "WEBHOOK_SECRET" in refused.json()["error"]["message"]
