"""Deployment and secrets, as an attacker sees them (issue 19, rules 7 and 8).

- A default `docker-compose up` opens nothing beyond this machine, starts no role without
  API keys, and has no password of its own (every one from `.env`).
- A tenant reading an agent or its config gets no tool definition and no secret; the
  local single user (auth off) and an admin get the definitions with every secret masked.
- No repr of the settings shows a service URL's password.
- `/agent NAME` from Slack, correctly signed, runs only the agents Slack may run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.api.views import agent_detail_view, config_view
from agentrunner.node import Node
from agentrunner.settings import Settings
from agentrunner.tracing import Caller, as_caller
from tests.compose_file import MissingVariableError, published_ports
from tests.compose_file import services as compose_services
from tests.fakes.slack_server import SIGNING_SECRET, FakeSlack, command_body, slack_headers
from tests.integration.conftest import node_on
from tests.security.conftest import ADMIN_KEY, TEAM_A_KEY, TENANTS_ENV

# Every secret an agent file below holds, in each place one can hide.
SECRETS = {
    "env": "mcp-env-secret-4f1c",
    "url_password": "kb-pass-8d2e",
    "url_query": "query-secret-77ab",
    "flag_value": "flag-secret-19c3",
    "key_value": "assign-secret-5e0d",
    "openai_shaped": "sk-proj-argsecret1234567890",
    "slack_shaped": "xoxb-1234-5678-abcdefsecret",
    "webhook_token": "hook-secret-0a9f",
    "ollama_password": "ollama-pass-3c3c",
}
TOOLED = f"""name: tooled
agent_type: t
execution_mode: autonomous
llm_config: {{provider: scripted, model: s}}
webhook_url: "https://hooks.example.com/done?token={SECRETS["webhook_token"]}&agent=tooled"
tools:
  - name: files
    type: mcp
    command: ["/nonexistent/mcp-files", "--token", "{SECRETS["flag_value"]}", "--verbose"]
    args: ["API_KEY={SECRETS["key_value"]}", "{SECRETS["openai_shaped"]}",
           "--bot={SECRETS["slack_shaped"]}", "--root", "/srv"]
    env: {{FILES_ROOT: /srv/files, FILES_TOKEN: "{SECRETS["env"]}"}}
  - name: kb
    type: mcp
    url: "https://kb-user:{SECRETS["url_password"]}@127.0.0.1:1/mcp?api_key={SECRETS["url_query"]}&region=eu"
    headers: {{Authorization: "Bearer ${{KB_TOKEN}}"}}
  - name: http_request
    allowed_hosts: [api.example.com]
"""
OLLAMA = f"""name: local
agent_type: t
execution_mode: autonomous
llm_config: {{provider: ollama, model: llama3, host: "http://me:{SECRETS["ollama_password"]}@127.0.0.1:1"}}
"""
AGENTS = {"tooled.yml": TOOLED, "local.yml": OLLAMA}
# Settings for node_on, which hands them to Settings to validate.
FAST: dict[str, Any] = {"mcp_connect_timeout_seconds": 1, "mcp_retry_seconds": 3600}


def _leaks(body: Any) -> list[str]:
    text = json.dumps(body)
    return [name for name, secret in SECRETS.items() if secret in text]


@asynccontextmanager
async def _clients(node: Node, key: str | None = None) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    headers = {"X-API-Key": key} if key else {}
    apps = node.apps()
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=apps["orchestrator"]), base_url="http://o", headers=headers
        ) as orchestrator,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=apps["config"]), base_url="http://c", headers=headers
        ) as config,
    ):
        yield orchestrator, config


# --- Rule 8: the compose file -------------------------------------------------------------

OPERATOR_ENV = {
    "API_KEYS": f"team-a:{TEAM_A_KEY}",
    "POSTGRES_PASSWORD": "pg0123456789abcdef",
    "REDIS_PASSWORD": "rd0123456789abcdef",
    "RABBITMQ_PASSWORD": "mq0123456789abcdef",
}


def test_a_default_compose_deployment_opens_nothing_beyond_this_machine() -> None:
    opened = {
        (name, port.address, port.target)
        for name, service in compose_services(OPERATOR_ENV).items()
        for port in published_ports(service)
    }

    assert opened, "the HTTP roles are published"
    assert {address for _, address, _ in opened} == {"127.0.0.1"}, opened
    assert {target for _, _, target in opened}.isdisjoint({"15672", "5672", "5432", "6379"}), opened


@pytest.mark.parametrize("missing", sorted(OPERATOR_ENV))
def test_compose_starts_no_role_without_keys_and_passwords(missing: str) -> None:
    with pytest.raises(MissingVariableError, match=missing):
        compose_services({**OPERATOR_ENV, missing: ""})


def test_compose_roles_require_keys_and_use_only_the_operators_passwords() -> None:
    running = compose_services(OPERATOR_ENV)
    roles = {name: service for name, service in running.items() if service.get("image") == "agentrunner:latest"}
    passwords = {value for name, value in OPERATOR_ENV.items() if name.endswith("PASSWORD")}

    assert roles
    for name, service in roles.items():
        environment = service["environment"]
        assert environment["ENABLE_API_AUTH"] == "true", name
        for url in ("DATABASE_URL", "REDIS_URL", "RABBITMQ_URL"):
            userinfo = environment[url].split("//", 1)[1].split("@", 1)[0]
            assert userinfo.split(":", 1)[1] in passwords, (name, url)
    assert f"--requirepass {OPERATOR_ENV['REDIS_PASSWORD']}" in str(running["redis"]["command"]).replace('"', "")


# --- Rule 7: secrets in agent and config reads ---------------------------------------------


async def test_a_tenant_reads_no_tool_definition_and_no_secret(tmp_path: Path) -> None:
    settings: dict[str, Any] = {**FAST, "enable_api_auth": True, "api_keys": f"team-a:{TEAM_A_KEY}"}
    async with node_on("memory", tmp_path, AGENTS, **settings) as node, _clients(node, TEAM_A_KEY) as (agents, configs):
        agent = await agents.get("/agents/tooled")
        local = await agents.get("/agents/local")
        config = await configs.get("/configs/tooled")
        local_config = await configs.get("/configs/local")

    assert agent.status_code == 200, agent.text
    assert agent.json()["tools"] == [
        {"name": "files", "type": "mcp", "description": ""},
        {"name": "kb", "type": "mcp", "description": ""},
        {"name": "http_request", "type": "builtin", "description": ""},
    ]
    assert _leaks(agent.json()) == []
    assert _leaks(local.json()) == []
    # Config reads may be an admin's only; when a tenant may read them, they hide the same.
    for response in (config, local_config):
        assert response.status_code in (200, 403, 404), response.text
        assert _leaks(response.json()) == []
    if config.status_code == 200:
        assert [set(tool) for tool in config.json()["config"]["tools"]] == [{"name", "type", "description"}] * 3


async def test_the_local_user_reads_tool_definitions_with_every_secret_masked(tmp_path: Path) -> None:
    async with node_on("memory", tmp_path, AGENTS, **FAST) as node, _clients(node) as (agents, configs):
        agent = (await agents.get("/agents/tooled")).json()
        config = (await configs.get("/configs/tooled")).json()
        local = (await configs.get("/configs/local")).json()

    assert _leaks([agent, config, local]) == []
    files, kb, _ = agent["tools"]
    assert files["env"] == {"FILES_ROOT": "********", "FILES_TOKEN": "********"}
    assert files["command"] == ["/nonexistent/mcp-files", "--token", "********", "--verbose"]
    assert files["args"] == ["API_KEY=********", "********", "--bot=********", "--root", "/srv"]
    assert kb["url"] == "https://kb-user:********@127.0.0.1:1/mcp?api_key=********&region=eu"
    assert kb["headers"] == {"Authorization": "********"}
    assert config["config"]["tools"] == agent["tools"]
    assert config["config"]["webhook_url"] == "https://hooks.example.com/done?token=********&agent=tooled"
    assert local["config"]["llm_config"]["host"] == "http://me:********@127.0.0.1:1"


async def test_an_admin_reads_tool_definitions_masked_and_a_tenant_names_only(tmp_path: Path) -> None:
    async with node_on("memory", tmp_path, AGENTS, **FAST) as node:
        registered = node.registry.get("tooled")
        assert registered.config is not None
        with as_caller(Caller("ops", admin=True)):
            admin = agent_detail_view(registered).model_dump(mode="json"), config_view(registered.config)
        with as_caller(Caller("team-a", admin=False)):
            tenant = agent_detail_view(registered).model_dump(mode="json"), config_view(registered.config)

    assert [_leaks(body) for body in (*admin, *tenant)] == [[], [], [], []]
    assert admin[0]["tools"][0]["env"] == {"FILES_ROOT": "********", "FILES_TOKEN": "********"}
    assert admin[1]["tools"] == admin[0]["tools"]
    assert [tool["name"] for tool in tenant[0]["tools"]] == ["files", "kb", "http_request"]
    assert all(set(tool) == {"name", "type", "description"} for tool in (*tenant[0]["tools"], *tenant[1]["tools"]))


async def test_over_http_an_admin_key_reads_definitions_and_a_tenant_key_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in TENANTS_ENV.items():
        monkeypatch.setenv(name, value)
    async with node_on("memory", tmp_path, AGENTS, **FAST) as node:
        async with _clients(node, ADMIN_KEY) as (agents, _):
            admin = (await agents.get("/agents/tooled")).json()
        async with _clients(node, TEAM_A_KEY) as (agents, _):
            tenant = (await agents.get("/agents/tooled")).json()

    assert _leaks([admin, tenant]) == []
    assert admin["tools"][0]["env"] == {"FILES_ROOT": "********", "FILES_TOKEN": "********"}
    assert all(set(tool) == {"name", "type", "description"} for tool in tenant["tools"])


async def test_only_an_admin_reloads_the_agent_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in TENANTS_ENV.items():
        monkeypatch.setenv(name, value)
    async with node_on("memory", tmp_path, AGENTS, **FAST) as node:
        async with _clients(node, TEAM_A_KEY) as (_, configs):
            tenant = await configs.post("/configs/reload")
        async with _clients(node, ADMIN_KEY) as (_, configs):
            admin = await configs.post("/configs/reload")

    assert tenant.status_code == 403, tenant.text
    assert tenant.json()["error"]["code"] == "admin_only"
    assert admin.status_code == 200, admin.text


def test_no_repr_of_the_settings_shows_a_service_password() -> None:
    settings = Settings(
        _env_file=None,
        database_url="postgresql+asyncpg://agentrunner:pg-pass-1f2e@db:5432/agentrunner",
        redis_url="redis://:redis-pass-3d4c@cache:6379/0",
        rabbitmq_url="amqp://agentrunner:mq-pass-5b6a@broker:5672/",
        otel_exporter_otlp_endpoint="https://otel-user:otel-pass-7980@collector:4318",
    )
    shown = f"{settings!r} {settings} {settings.model_dump()} {settings.model_dump_json()}"

    assert [word for word in ("pg-pass", "redis-pass", "mq-pass", "otel-pass") if word in shown] == []
    assert "@db:5432/agentrunner" in repr(settings), "the URL still says where it points"


# --- Rule 8: Slack's /agent -----------------------------------------------------------------

SCRIPTED = "agent_type: t\nexecution_mode: autonomous\nllm_config: {provider: scripted, model: s}\n"
SLACK_AGENTS = {
    "assistant.yml": f"name: assistant\n{SCRIPTED}",
    "listener.yml": f"name: listener\n{SCRIPTED}event_subscriptions: ['slack.command.ask']\n",
    "ops-admin.yml": f"name: ops-admin\n{SCRIPTED}",
}
FORM = {"content-type": "application/x-www-form-urlencoded"}


async def _slash(node: Node, slack: FakeSlack, text: str) -> dict[str, Any]:
    body = command_body("/agent", text, response_url=slack.response_url("deployment"))
    transport = httpx.ASGITransport(app=node.apps()["slack"])
    async with httpx.AsyncClient(transport=transport, base_url="http://slack", timeout=10) as http:
        response = await http.post("/slack/commands", content=body, headers={**FORM, **slack_headers(body)})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize(
    ("allowed", "runs", "refused"),
    [
        ((), ["assistant", "listener"], ["ops-admin", "ghost"]),
        (("ops-admin",), ["ops-admin"], ["assistant", "ghost"]),
    ],
    ids=["routed-by-default", "named"],
)
async def test_slack_agent_command_runs_only_the_allowed_agents(
    tmp_path: Path, allowed: tuple[str, ...], runs: list[str], refused: list[str]
) -> None:
    with FakeSlack(retry_after=0) as slack:
        settings = {
            "slack_signing_secret": SIGNING_SECRET,
            "slack_api_url": slack.api_url,
            "slack_commands": {"/ask": "assistant"},
            "slack_allowed_agents": allowed,
        }
        async with node_on("memory", tmp_path, SLACK_AGENTS, script=lambda _: "done", **settings) as node:
            refusals = {name: await _slash(node, slack, f"{name} delete everything") for name in refused}
            accepted = {name: await _slash(node, slack, f"{name} summarise") for name in runs}
            ran = {execution.agent for execution in (await node.store.queries.list_executions()).items}

    for name, answer in refusals.items():
        assert answer["response_type"] == "ephemeral"
        assert f"`/agent {name}` is not allowed here" in answer["text"]
        assert "SLACK_ALLOWED_AGENTS" in answer["text"]
        listed = answer["text"].split("Slack may run", 1)[1]
        assert [agent for agent in refused if agent in listed] == [], "a refusal lists only the allowed agents"
    assert all("Working on it" in answer["text"] for answer in accepted.values()), accepted
    assert ran == set(runs)
