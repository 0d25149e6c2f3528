"""A node with REDIS_URL: executions are cached in the real Redis, and a Redis that is
down slows nothing that matters: invocations still succeed and readiness says degraded."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from agentrunner.domain.execution import ExecutionStatus
from agentrunner.node import Node
from agentrunner.settings import Settings
from tests.ports import free_port

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/0"
AGENT = "name: echoer\nagent_type: demo\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"


def _settings(tmp_path: Path, redis_url: str, prefix: str) -> Settings:
    (tmp_path / "agents").mkdir(exist_ok=True)
    (tmp_path / "agents" / "echoer.yml").write_text(AGENT)
    return Settings(
        _env_file=None, redis_url=redis_url, redis_key_prefix=prefix, agents_dir=tmp_path / "agents", data_dir=tmp_path
    )


async def test_finished_executions_are_cached_in_redis(tmp_path: Path) -> None:
    prefix = f"agentrunner-test:{uuid.uuid4().hex}:"
    node = Node(_settings(tmp_path, REDIS_URL, prefix))
    redis = Redis.from_url(REDIS_URL)
    try:
        async with node.running():
            execution = await node.orchestrator.invoke("echoer", {"prompt": "cache me"}, wait=10)
            cached = await redis.get(f"{prefix}execution:{execution.execution_id}")
    finally:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()

    assert execution.status is ExecutionStatus.SUCCEEDED
    assert cached is not None
    assert b'"status":"succeeded"' in cached


async def test_with_redis_down_invocations_succeed_and_readiness_is_degraded(tmp_path: Path) -> None:
    node = Node(_settings(tmp_path, f"redis://127.0.0.1:{free_port()}/0", "agentrunner-test:"))
    app = node.apps()["orchestrator"]
    async with node.running(), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o") as http:
        invoked = await http.post("/agents/echoer/invoke", json={"task_data": {"prompt": "no cache"}})
        ready = await http.get("/health/ready")
        again = await http.get(f"/executions/{invoked.json()['execution_id']}")

    assert invoked.status_code == 200
    assert invoked.json()["output"] == "no cache"
    assert again.json()["status"] == "succeeded"
    assert ready.status_code == 200
    assert ready.json()["degraded"] == ["cache"]
    assert ready.json()["checks"]["cache"].startswith("cache redis://127.0.0.1:")
