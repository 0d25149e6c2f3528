"""The attacker's suite: two tenants and an admin against the running platform.

Every test here plays a caller that should not get what it asks for, and is marked
`security` (run with `pytest -m security`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from agentrunner.node import Node
from agentrunner.settings import Settings
from tests.blocking import no_blocking_calls

# Keys of 32+ characters, as the platform requires with ENABLE_API_AUTH=true.
TEAM_A_KEY = "team-a-key-0123456789abcdef0123456789"
TEAM_B_KEY = "team-b-key-0123456789abcdef0123456789"
ADMIN_KEY = "admin-key-0123456789abcdef0123456789ab"

# The environment of a platform with two tenants and one admin.
TENANTS_ENV = {
    "ENABLE_API_AUTH": "true",
    "API_KEYS": f"team-a:{TEAM_A_KEY},team-b:{TEAM_B_KEY}",
    "ADMIN_API_KEYS": f"ops:{ADMIN_KEY}",
}


def tenants_settings(tmp_path: Path, agents: Path | None = None) -> Settings:
    """An embedded node's settings with the two tenants and the admin of `TENANTS_ENV`, its
    agents from `agents` (`tmp_path/agents` when not given) and its data in `tmp_path`."""
    return Settings(
        _env_file=None,
        agents_dir=agents or tmp_path / "agents",
        data_dir=tmp_path,
        enable_api_auth=True,
        api_keys=TENANTS_ENV["API_KEYS"],
        admin_api_keys=TENANTS_ENV["ADMIN_API_KEYS"],
    )


@asynccontextmanager
async def orchestrator_client(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the running `node`'s orchestrator app, in process."""
    app = node.apps()["orchestrator"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o") as client:
        yield client


@pytest.fixture(autouse=True)
def _no_blocking_calls() -> Iterator[None]:
    """Fails a test whose agentrunner code blocks the event loop (tests/blocking.py): the
    nodes these tests run in their own process."""
    with no_blocking_calls():
        yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/security/" in str(item.path):
            item.add_marker(pytest.mark.security)
