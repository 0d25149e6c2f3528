"""Two slack gateway replicas (distributed: PostgreSQL, RabbitMQ, Redis) and a worker: the
same signed command reaching both replicas runs once, and is answered once, since they
share the de-duplication keys in Redis and the answers queue on RabbitMQ."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from redis.asyncio import Redis

from agentrunner.adapters.bus.rabbitmq import RabbitMQEventBus
from agentrunner.adapters.state.urls import run_schema_command
from agentrunner.node import Node
from agentrunner.settings import Settings
from tests.contract.conftest import RABBITMQ_URL, REDIS_URL, delete_broker_objects
from tests.fakes.slack_server import BOT_TOKEN, SIGNING_SECRET, FakeSlack, command_body, slack_headers

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.redis]

AGENT = "name: assistant\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"


@pytest.fixture
async def deployment(tmp_path: Path, postgres_url: str) -> AsyncIterator[tuple[list[Node], FakeSlack]]:
    await asyncio.to_thread(run_schema_command, postgres_url, "upgrade")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "assistant.yml").write_text(AGENT)
    prefix = f"test-{uuid4().hex[:12]}"
    with FakeSlack() as slack:
        settings = Settings(
            _env_file=None,
            agents_dir=tmp_path / "agents",
            data_dir=tmp_path,
            database_url=postgres_url,
            rabbitmq_url=RABBITMQ_URL,
            rabbitmq_exchange_prefix=prefix,
            redis_url=REDIS_URL,
            redis_key_prefix=f"{prefix}:",
            slack_signing_secret=SIGNING_SECRET,
            slack_bot_token=BOT_TOKEN,
            slack_api_url=slack.api_url,
            egress_allowed_networks=("127.0.0.0/8",),  # the fake Slack listens on loopback
            slack_commands={"/ask": "assistant"},
        )
        nodes = [Node(settings, roles=["slack"]), Node(settings, roles=["slack"]), Node(settings, roles=["autonomous"])]
        try:
            async with AsyncExitStack() as stack:
                for node in nodes:
                    await stack.enter_async_context(node.running())
                yield nodes, slack
        finally:
            for node in nodes:
                if isinstance(node.bus, RabbitMQEventBus):
                    await delete_broker_objects(node.bus)
            redis = Redis.from_url(REDIS_URL)
            keys = [key async for key in redis.scan_iter(match=f"{prefix}:*")]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()


async def test_one_command_reaching_two_replicas_runs_and_is_answered_once(
    deployment: tuple[list[Node], FakeSlack],
) -> None:
    (first, second, worker), slack = deployment
    body = command_body("/ask", "hello replicas", response_url=slack.response_url("rep"))
    headers = {"content-type": "application/x-www-form-urlencoded", **slack_headers(body)}
    acks = []
    for replica in (first, second):
        transport = httpx.ASGITransport(app=replica.apps()["slack"])
        async with httpx.AsyncClient(transport=transport, base_url="http://slack", timeout=10) as http:
            acks.append(await http.post("/slack/commands", content=body, headers={**headers, "X-Slack-Retry-Num": "1"}))
    [answer] = await slack.wait_for(1, "/response/rep")
    await asyncio.sleep(1.0)  # time for a second run or answer to show up, if there were one
    executions = (await worker.store.queries.list_executions(agent="assistant")).items

    assert [ack.status_code for ack in acks] == [200, 200]
    assert "Working on it" in acks[0].json()["text"]
    assert "Already on it" in acks[1].json()["text"]
    assert len(executions) == 1
    assert answer.body["text"] == "hello replicas"
    assert len(slack.messages("/response/rep")) == 1
