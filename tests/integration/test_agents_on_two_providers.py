"""Two agents on different providers (OpenAI and a local Ollama) run at the same time in one
node, each through its own vendor's SDK, each execution priced with its own model."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agentrunner.domain.execution import ExecutionStatus
from agentrunner.node import Node
from agentrunner.settings import Settings
from tests.fakes import ollama_server, openai_server


async def test_agents_on_openai_and_ollama_answer_concurrently(tmp_path: Path) -> None:
    with openai_server.running() as openai_fake, ollama_server.running() as ollama_fake:
        openai_fake.reply_with("from gpt", input_tokens=1000, output_tokens=100)
        ollama_fake.reply_with("from llama", input_tokens=1000, output_tokens=100)
        openai_fake.slow(0.5)
        ollama_fake.slow(0.5)
        agents = tmp_path / "agents"
        agents.mkdir()
        (agents / "writer.yml").write_text(
            "name: writer\nagent_type: w\nexecution_mode: autonomous\nllm_config: {provider: openai, model: gpt-4o}\n"
        )
        (agents / "local.yml").write_text(
            "name: local\nagent_type: l\nexecution_mode: autonomous\n"
            f"llm_config: {{provider: ollama, model: llama3.1, host: '{ollama_fake.host}'}}\n"
        )
        settings = Settings(
            _env_file=None,
            agents_dir=agents,
            data_dir=tmp_path,
            openai_api_key=openai_fake.api_key,
            openai_base_url=openai_fake.base_url,
        )
        node = Node(settings)
        async with node.running():
            started = time.monotonic()
            writer, local = await asyncio.gather(
                node.orchestrator.invoke("writer", {"prompt": "hi"}, wait=10),
                node.orchestrator.invoke("local", {"prompt": "hi"}, wait=10),
            )
            elapsed = time.monotonic() - started

    assert (writer.status, writer.output, writer.provider) == (ExecutionStatus.SUCCEEDED, "from gpt", "openai")
    assert (local.status, local.output, local.provider) == (ExecutionStatus.SUCCEEDED, "from llama", "ollama")
    assert writer.cost_usd == pytest.approx((1000 * 2.5 + 100 * 10.0) / 1_000_000)
    assert local.cost_usd == 0.0
    assert elapsed < 0.95, "the two agents ran at the same time"
