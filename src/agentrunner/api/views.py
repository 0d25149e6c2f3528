"""Shapes of agents as the API shows them (orchestrator and config roles)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from agentrunner.domain.agent import AgentConfig
from agentrunner.runtime.registry import RegisteredAgent

_SECRET_KEY = re.compile(r"(api[_-]?key|secret|token|password|authorization|credential)", re.IGNORECASE)
MASK = "********"


class LLMView(BaseModel):
    """Which provider and model answer for the agent."""

    provider: str
    model: str


class AgentView(BaseModel):
    """One agent in `GET /agents`."""

    name: str
    agent_type: str | None
    execution_mode: str | None
    description: str | None
    tags: list[str]
    status: str
    reasons: list[str]
    llm: LLMView | None
    source: str


class AgentDetailView(AgentView):
    """One agent in `GET /agents/{name}`: its triggers too."""

    event_subscriptions: list[str]
    schedule: dict[str, Any] | None
    tools: list[dict[str, Any]]
    # The tools its model is offered now (an MCP entry's tools as `<entry>__<tool>`).
    offered_tools: list[str]
    warnings: list[str]


def agent_view(agent: RegisteredAgent) -> AgentView:
    """The list entry for `agent`."""
    config = agent.config
    return AgentView(
        name=agent.name,
        agent_type=config.agent_type if config else None,
        execution_mode=config.execution_mode.value if config else None,
        description=config.description if config else None,
        tags=list(config.tags) if config else [],
        status=agent.status.value,
        reasons=list(agent.reasons),
        llm=LLMView(provider=config.llm_config.provider.value, model=config.llm_config.model) if config else None,
        source=agent.source,
    )


def agent_detail_view(agent: RegisteredAgent) -> AgentDetailView:
    """The detail entry for `agent`."""
    config = agent.config
    return AgentDetailView(
        **agent_view(agent).model_dump(),
        event_subscriptions=list(config.event_subscriptions) if config else [],
        schedule=masked(config.schedule_config.model_dump(mode="json")) if config and config.schedule_config else None,
        tools=[masked(tool.model_dump(mode="json")) for tool in config.tools] if config else [],
        offered_tools=list(agent.tools),
        warnings=[str(warning) for warning in agent.warnings],
    )


def masked(value: Any) -> Any:
    """`value` with every field whose name looks secret replaced by a mask."""
    if isinstance(value, dict):
        return {key: MASK if _SECRET_KEY.search(str(key)) and item else masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [masked(item) for item in value]
    return value


def config_view(config: AgentConfig) -> dict[str, Any]:
    """The whole agent config as JSON, secrets masked."""
    result: dict[str, Any] = masked(config.model_dump(mode="json"))
    return result
