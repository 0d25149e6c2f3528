"""`GET /agents/{name}/versions` and `GET /agents/{name}/versions/{v}`: the versions of an
agent (`domain/agent_version.py`), to include in the orchestrator app.

Agents are platform-wide (any caller of `GET /agents/{name}` sees every agent), so are
their versions; what a version keeps is masked already, as `GET /agents/{name}` shows it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel

from agentrunner.domain.agent_version import MAX_VERSION, AgentVersion, text_diff
from agentrunner.domain.errors import AgentVersionNotFoundError
from agentrunner.ports.agent_versions import AgentVersions
from agentrunner.runtime.registry import AgentRegistry

AgentName = Annotated[str, Path(min_length=1, max_length=128)]
VersionNumber = Annotated[int, Path(ge=1, le=MAX_VERSION, description="The agent's version number (1, 2, ...).")]


class FieldChangeView(BaseModel):
    """One field that differs from the previous version, by its dotted path."""

    field: str
    before: Any
    after: Any


class AgentVersionView(BaseModel):
    """One version of an agent in `GET /agents/{name}/versions`."""

    agent: str
    version: int
    content_hash: str
    created_at: datetime
    changes: list[FieldChangeView]


class AgentVersionDetail(AgentVersionView):
    """One version with its text (YAML, secrets masked, tools by name) and the line diff of
    that text to the previous version's (empty for version 1)."""

    text: str
    diff: str


def version_view(version: AgentVersion) -> AgentVersionView:
    """The list entry of `version`."""
    return AgentVersionView(
        agent=version.agent,
        version=version.version,
        content_hash=version.content_hash,
        created_at=version.created_at,
        changes=[FieldChangeView(**change.as_json()) for change in version.changes],
    )


def agent_version_routes(registry: AgentRegistry, versions: AgentVersions) -> APIRouter:
    """The version routes of agents, over the store's `versions`."""
    router = APIRouter(tags=["agents"])

    @router.get("/agents/{name}/versions", response_model=list[AgentVersionView])
    async def list_agent_versions(name: AgentName) -> list[AgentVersionView]:
        """The versions of an agent, newest first."""
        recorded = await versions.list_versions(name)
        if not recorded:
            registry.get(name)  # an agent nobody knows: 404 agent_not_found
        return [version_view(version) for version in recorded]

    @router.get("/agents/{name}/versions/{v}", response_model=AgentVersionDetail)
    async def get_agent_version(name: AgentName, v: VersionNumber) -> AgentVersionDetail:
        """One version of an agent: its text and its diff to the previous version."""
        try:
            version = await versions.get_version(name, v)
        except AgentVersionNotFoundError:
            if name not in registry.agents and not await versions.list_versions(name):
                registry.get(name)  # an agent nobody knows: 404 agent_not_found
            raise
        diff = text_diff(await versions.get_version(name, v - 1), version) if v > 1 else ""
        return AgentVersionDetail(**version_view(version).model_dump(), text=version.text, diff=diff)

    return router
