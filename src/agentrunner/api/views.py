"""Shapes of agents as the API shows them (orchestrator and config roles)."""

from __future__ import annotations

from typing import Any

from agentrunner.api.models import AgentDetailView, AgentView, LLMView
from agentrunner.domain.agent import AgentConfig, ToolConfig
from agentrunner.domain.redaction import MASK, is_secret_name, mask_arguments, mask_command, mask_text, masked
from agentrunner.ports.tools import Repeatable
from agentrunner.runtime.registry import RegisteredAgent
from agentrunner.tracing import current_caller


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
        short_reason=agent.short_reason,
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
        tools=tools_view(config.tools) if config else [],
        offered_tools=list(agent.tools),
        offered_tools_repeatable={name: agent.repeatable.get(name, Repeatable.NEVER) for name in agent.tools},
        warnings=[str(warning) for warning in agent.warnings],
    )


def reads_tool_definitions() -> bool:
    """Whether the caller may read tool definitions (their URLs, commands, arguments and
    environment, masked): an admin, or anyone with auth off (one local user). A tenant sees
    its agents' tool names only: a definition tells where internal services are."""
    caller = current_caller()
    return caller.admin or caller.tenant is None


def tool_view(tool: ToolConfig) -> dict[str, Any]:
    """One tool entry as the caller may see it: its name, type and description to a tenant;
    the whole entry with every secret masked to an admin (each `env` value, secret-looking
    arguments, URL credentials, secret headers)."""
    if not reads_tool_definitions():
        return {"name": tool.name, "type": tool.type, "description": tool.description}
    entry: dict[str, Any] = masked(tool.model_dump(mode="json"))
    entry["env"] = {name: MASK for name in tool.env}
    entry["args"] = mask_arguments(tool.args)
    if isinstance(tool.command, str):
        entry["command"] = mask_command(tool.command)
    elif tool.command is not None:
        entry["command"] = mask_arguments(tool.command)
    entry["headers"] = {
        name: MASK if is_secret_name(name) else mask_text(value) for name, value in tool.headers.items()
    }
    return entry


def tools_view(tools: list[ToolConfig]) -> list[dict[str, Any]]:
    """An agent's tool entries as the caller may see them (see `tool_view`)."""
    return [tool_view(tool) for tool in tools]


def config_view(config: AgentConfig) -> dict[str, Any]:
    """The whole agent config as JSON, secrets masked; tool entries as `tool_view` shows
    them to the caller."""
    result: dict[str, Any] = masked(config.model_dump(mode="json"))
    result["tools"] = tools_view(config.tools)
    return result
