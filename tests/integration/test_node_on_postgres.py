"""A whole node (orchestrator, autonomous pool, bus, cache) on the real PostgreSQL server:
the distributed state backend behaves as the embedded one does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from agentrunner.adapters.state.urls import run_schema_command
from agentrunner.domain.errors import ConfigError
from agentrunner.domain.execution import ExecutionStatus
from agentrunner.domain.llm import LLMRequest
from agentrunner.node import Node
from agentrunner.settings import Settings
from tests.conftest import POSTGRES_ADMIN_URL

pytestmark = pytest.mark.postgres

AGENT = """
name: scripted-helper
agent_type: helper
execution_mode: autonomous
llm_config: {provider: scripted, model: script-1}
system_prompt: Be brief.
retry_config: {max_retries: 1, retry_delay_seconds: 0}
"""


def _reply(request: LLMRequest) -> str:
    prompt = request.messages[-1].content
    if prompt == "fail":
        raise RuntimeError("scripted failure")
    return prompt.upper()


@pytest.fixture
async def settings(tmp_path: Path, postgres_url: str) -> Settings:
    # What an operator does once before starting replicas on a shared PostgreSQL.
    await asyncio.to_thread(run_schema_command, postgres_url, "upgrade")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "scripted-helper.yml").write_text(AGENT)
    return Settings(_env_file=None, database_url=postgres_url, agents_dir=tmp_path / "agents", data_dir=tmp_path)


async def test_invocation_is_recorded_in_postgres(settings: Settings) -> None:
    node = Node(settings, script=_reply)
    async with node.running():
        execution = await node.orchestrator.invoke("scripted-helper", {"prompt": "hello"}, wait=10)

    assert execution.status is ExecutionStatus.SUCCEEDED
    assert execution.output == "HELLO"
    database = settings.database_url.get_secret_value().rsplit("/", 1)[1]
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}")
    try:
        row = await connection.fetchrow(
            "SELECT status, output, attempts, provider, model FROM executions WHERE execution_id = $1",
            execution.execution_id,
        )
    finally:
        await connection.close()
    assert row is not None, "the execution is in PostgreSQL"
    assert dict(row) == {
        "status": "succeeded",
        "output": "HELLO",
        "attempts": 1,
        "provider": "scripted",
        "model": "script-1",
    }


async def test_an_unexpected_failure_is_retried_then_recorded_as_failed(settings: Settings) -> None:
    node = Node(settings, script=_reply)
    async with node.running():
        execution = await node.orchestrator.invoke("scripted-helper", {"prompt": "fail"}, wait=10)
        listed = await node.orchestrator.executions(
            agent="scripted-helper", status=ExecutionStatus.FAILED, limit=10, cursor=None
        )

    assert execution.status is ExecutionStatus.FAILED
    assert execution.attempts == 2
    assert execution.error is not None
    assert "scripted failure" in execution.error.message
    assert [e.execution_id for e in listed.items] == [execution.execution_id]


async def test_a_node_refuses_a_postgres_database_that_was_not_migrated(
    tmp_path: Path, empty_postgres_url: str
) -> None:
    settings = Settings(_env_file=None, database_url=empty_postgres_url, agents_dir=tmp_path, data_dir=tmp_path)
    node = Node(settings)

    with pytest.raises(ConfigError, match="agentrunner db upgrade"):
        await node.start()
    await node.stop()


async def test_the_registry_table_holds_the_loaded_agents(settings: Settings) -> None:
    node = Node(settings, script=_reply)
    async with node.running():
        records = await node.store.agents.list_agents()

    assert [(r.name, r.status) for r in records] == [("scripted-helper", "available")]
    assert records[0].config is not None
    assert records[0].config["llm_config"]["model"] == "script-1"
