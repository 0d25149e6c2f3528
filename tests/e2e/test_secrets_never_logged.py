"""No configured secret ever reaches a log line: `agentrunner up` at DEBUG with every secret
set (API keys, each provider's keys, AWS session token, the Slack signing secret and bot
token), through a whole user flow: requests with no, wrong and right keys, invocations on
three vendors' wires, a failure, a signed Slack command, a mention answered with the bot
token, a forged Slack request, and the operator CLI; and distributed roles at DEBUG on
PostgreSQL, RabbitMQ and Redis, whose URLs' passwords never show either, nor the
credentials in an MCP server's URL (logged and reported when it is unreachable)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from agentrunner.adapters.state.urls import run_schema_command
from tests.contract.conftest import RABBITMQ_URL, REDIS_URL
from tests.e2e.platform import start_platform
from tests.fakes import anthropic_server, bedrock_server
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import BOT_TOKEN, SIGNING_SECRET, FakeSlack, command_body, slack_headers
from tests.integration.processes import role_processes
from tests.ports import free_port

pytestmark = pytest.mark.e2e

FAST_FAIL = "retry_config: {max_retries: 0}\n"
AGENTS = {
    "on-openai": "llm_config: {provider: openai, model: gpt-4o}\nevent_subscriptions: ['slack.command.ask']\n",
    "on-anthropic": f"llm_config: {{provider: anthropic, model: {anthropic_server.MODEL}}}\n",
    "on-bedrock": "llm_config: {provider: bedrock, model: anthropic.claude-3-haiku-20240307-v1:0}\n",
    # Nothing listens on its host: every call fails, and the failure is logged.
    "unreachable": f"llm_config: {{provider: ollama, model: llama3, max_attempts: 1}}\n{FAST_FAIL}",
}


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid4().hex}"


def _mention(text: str) -> bytes:
    event = {"type": "app_mention", "user": "U1", "text": text, "ts": "1700000000.000100", "channel": "C1"}
    body = {"type": "event_callback", "team_id": "T1", "event_id": _unique("Ev"), "event_time": 1, "event": event}
    return json.dumps(body).encode()


def test_no_configured_secret_appears_in_any_log_line(tmp_path: Path) -> None:
    api_keys = [_unique("ak-first-"), _unique("ak-second-")]
    secrets = {
        "API_KEYS": ",".join(api_keys),  # bare keys: their tenants are HMACs under TENANT_ID_SECRET
        "TENANT_ID_SECRET": _unique("tenant-secret-"),
        "OPENAI_API_KEY": _unique("sk-proj-"),
        "ANTHROPIC_API_KEY": anthropic_server.API_KEY,
        "AWS_ACCESS_KEY_ID": f"AKIA{uuid4().hex[:16].upper()}",
        "AWS_SECRET_ACCESS_KEY": _unique("aws-secret-"),
        "AWS_SESSION_TOKEN": _unique("aws-session-"),
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
    }
    (tmp_path / "agents").mkdir()
    for name, llm in AGENTS.items():
        (tmp_path / "agents" / f"{name}.yml").write_text(
            f"name: {name}\nagent_type: t\nexecution_mode: autonomous\n{llm}"
        )
    with (
        FakeOpenAI(api_key=secrets["OPENAI_API_KEY"]) as openai,
        anthropic_server.running() as anthropic,
        bedrock_server.running() as bedrock,
        FakeSlack() as slack,
    ):
        env = {
            **secrets,
            "ENABLE_API_AUTH": "true",
            "LOG_LEVEL": "DEBUG",
            "OPENAI_BASE_URL": openai.base_url,
            "ANTHROPIC_BASE_URL": anthropic.base_url,
            "BEDROCK_ENDPOINT_URL": bedrock.endpoint_url,
            "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",
            "SLACK_API_URL": slack.api_url,
            "EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8",  # the fake Slack listens on loopback
            "SLACK_COMMANDS": "/ask=on-openai",
            "SLACK_DEFAULT_AGENT": "on-openai",
        }
        platform = start_platform(tmp_path, env)
        try:
            orchestrator = platform.url("orchestrator")
            right = {"X-API-Key": api_keys[1]}
            refused = [
                httpx.get(f"{orchestrator}/agents", timeout=10),
                httpx.get(f"{orchestrator}/agents", headers={"X-API-Key": "not-" + api_keys[0]}, timeout=10),
                httpx.get(f"{platform.url('state')}/usage", headers={"Authorization": "Bearer wrong"}, timeout=10),
            ]
            agents = httpx.get(f"{orchestrator}/agents", headers={"Authorization": f"Bearer {api_keys[0]}"}, timeout=10)
            runs = {
                name: httpx.post(
                    f"{orchestrator}/agents/{name}/invoke",
                    json={"task_data": {"prompt": "hi"}},
                    headers=right,
                    timeout=60,
                )
                for name in AGENTS
            }
            command = command_body("/ask", "from slack", response_url=slack.response_url("secrets"))
            form = {"content-type": "application/x-www-form-urlencoded"}
            slack_url = f"{platform.url('slack')}/slack"
            ack = httpx.post(f"{slack_url}/commands", content=command, headers={**form, **slack_headers(command)})
            mention = _mention("<@U0BOT> hello")
            event_headers = {"content-type": "application/json", **slack_headers(mention)}
            mentioned = httpx.post(f"{slack_url}/events", content=mention, headers=event_headers)
            forged = httpx.post(
                f"{slack_url}/commands", content=command, headers={**form, **slack_headers(command, "guess")}
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (
                slack.messages("/response/secrets") and slack.messages("chat.postMessage")
            ):
                time.sleep(0.1)
            cli = subprocess.run(
                [sys.executable, "-m", "agentrunner", "runs", "--url", orchestrator],
                env={**platform.env, "AGENTRUNNER_API_KEY": api_keys[0]},
                check=False,
                capture_output=True,
                text=True,
                timeout=30,
            )
        finally:
            assert platform.stop() == 0
        logs = platform.log_path.read_text() + cli.stdout + cli.stderr

    assert [response.status_code for response in refused] == [401, 401, 401]
    assert agents.status_code == 200
    statuses = {name: response.json().get("status") for name, response in runs.items()}
    assert statuses == {
        "on-openai": "succeeded",
        "on-anthropic": "succeeded",
        "on-bedrock": "succeeded",
        "unreachable": "failed",
    }
    assert (ack.status_code, mentioned.status_code, forged.status_code) == (200, 200, 401)
    assert slack.messages("/response/secrets"), "the command was answered"
    assert slack.messages("chat.postMessage"), "the mention was answered with the bot token"
    assert cli.returncode == 0, cli.stderr
    records = platform.log_records()  # every line is JSON
    assert any(record["level"] == "DEBUG" for record in records), "DEBUG lines were written"
    leaked = {name for name, value in secrets.items() for part in value.split(",") if part in logs}
    assert leaked == set(), f"secrets in the logs: {sorted(leaked)}"


@pytest.mark.postgres
@pytest.mark.rabbitmq
@pytest.mark.redis
def test_distributed_roles_log_no_secret_nor_a_url_password(tmp_path: Path, postgres_url: str) -> None:
    run_schema_command(postgres_url, "upgrade")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "on-openai.yml").write_text(
        "name: on-openai\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: openai, model: gpt-4o}\n"
    )
    # An MCP server that does not answer: its URL is logged and reported, credentials masked.
    mcp_password, mcp_token = _unique("mcp-pass-"), _unique("mcp-token-")
    (tmp_path / "agents" / "with-tools.yml").write_text(
        "name: with-tools\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: openai, model: gpt-4o}\n"
        f"tools:\n  - {{name: kb, type: mcp, url: 'http://kb:{mcp_password}@127.0.0.1:{free_port()}/mcp?token={mcp_token}'}}\n"
    )
    api_key = _unique("ak-distributed-")
    tenant_secret = _unique("tenant-secret-")
    port, health_port = free_port(), free_port()
    # Redis accepts any password for its default user when it has none: REDIS_URL carries one.
    redis_password = _unique("redis-pass-")
    redis_url = REDIS_URL if "@" in REDIS_URL else REDIS_URL.replace("://", f"://default:{redis_password}@", 1)
    # The passwords of the service URLs, as they appear in them ("user:password@").
    userinfo = {
        url.split("//", 1)[1].split("@", 1)[0] + "@" for url in (postgres_url, RABBITMQ_URL, redis_url) if "@" in url
    }
    with FakeOpenAI(api_key=_unique("sk-proj-")) as openai:
        env = {
            "ENABLE_API_AUTH": "true",
            "API_KEYS": api_key,
            "TENANT_ID_SECRET": tenant_secret,
            "OPENAI_API_KEY": openai.api_key,
            "OPENAI_BASE_URL": openai.base_url,
            "REDIS_URL": redis_url,
            "MCP_CONNECT_TIMEOUT_SECONDS": "1",
            "LOG_LEVEL": "DEBUG",
            "ORCHESTRATOR_PORT": str(port),
        }
        with role_processes(tmp_path, postgres_url, **env) as roles:
            roles.serve("orchestrator", log="orchestrator.log")
            roles.serve("autonomous", "--health-port", str(health_port), log="autonomous.log")
            roles.wait_ready(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{health_port}")
            url = f"http://127.0.0.1:{port}/agents/on-openai/invoke"
            wrong = httpx.post(url, json={}, headers={"X-API-Key": "wrong"}, timeout=10)
            done = httpx.post(url, json={"task_data": {"prompt": "hi"}}, headers={"X-API-Key": api_key}, timeout=60)
            tooled = httpx.get(f"http://127.0.0.1:{port}/agents/with-tools", headers={"X-API-Key": api_key}, timeout=10)
        logs = roles.log_text()

    assert wrong.status_code == 401
    assert done.status_code == 200, done.text
    assert '"level":"DEBUG"' in logs
    assert "MCP server unreachable" in logs, "the MCP server's URL was logged"
    assert tooled.status_code == 200, tooled.text
    leaked = [
        value
        for value in (api_key, tenant_secret, openai.api_key, redis_password, mcp_password, mcp_token, *userinfo)
        if value in logs or value in tooled.text
    ]
    assert leaked == []
