"""An agent as other protocols show it: the input it takes (its `input_schema`, else a
`prompt` string), the task_data a call's arguments become, and the structured answer it
gives (its `output_schema`, when that is an object's). Pure: the MCP server (api/mcp.py)
and the invocation's own check (runtime/orchestrator.py) use it."""

from __future__ import annotations

import copy
from typing import Any

from agentrunner.domain.agent import AgentConfig, ExecutionMode
from agentrunner.domain.errors import InputInvalidError
from agentrunner.domain.structured_output import value_problems

# What an agent without an input_schema takes: the task_data the CLI's `invoke` sends.
PROMPT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"prompt": {"type": "string", "description": "What to ask the agent."}},
    "required": ["prompt"],
}
# A continuous agent's conversation: an argument of its tool, not part of its task_data.
SESSION_ARGUMENT = "session_id"
MAX_SESSION_ID_CHARS = 256  # as InvokeRequest.session_id
_SESSION_SCHEMA: dict[str, Any] = {
    "type": "string",
    "maxLength": MAX_SESSION_ID_CHARS,
    "description": "The conversation to continue (a new one when absent); the answer's _meta names it.",
}


def check_input(config: AgentConfig, task_data: dict[str, Any]) -> None:
    """Raise `InputInvalidError` (listing the problems) when `task_data` does not follow
    `config`'s input_schema; an agent without one takes any task_data."""
    if config.input_schema is None:
        return
    problems = value_problems(task_data, config.input_schema)
    if problems:
        raise InputInvalidError(
            f"task_data does not follow the input_schema of agent {config.name!r}: {'; '.join(problems)}",
            agent=config.name,
            problems=list(problems),
        )


def takes_session(config: AgentConfig) -> bool:
    """Whether `config`'s tool takes a `session_id` argument: a continuous agent's, unless
    its own input_schema has a field of that name."""
    own = (config.input_schema or {}).get("properties") or {}
    return config.execution_mode is ExecutionMode.CONTINUOUS and SESSION_ARGUMENT not in own


def tool_input_schema(config: AgentConfig) -> dict[str, Any]:
    """The JSON Schema of the arguments of `config`'s tool (a copy: the caller may change it)."""
    schema = copy.deepcopy(config.input_schema or PROMPT_SCHEMA)
    if takes_session(config):
        schema["properties"] = {**(schema.get("properties") or {}), SESSION_ARGUMENT: dict(_SESSION_SCHEMA)}
    return schema


def tool_output_schema(config: AgentConfig) -> dict[str, Any] | None:
    """The JSON Schema of the structured answer of `config`'s tool: its output_schema when
    that describes an object (MCP's structured content is one), else None (text only)."""
    schema = config.response_schema
    return copy.deepcopy(schema) if schema is not None and schema.get("type") == "object" else None


def arguments_problems(config: AgentConfig, arguments: dict[str, Any]) -> tuple[str, ...]:
    """Where `arguments` do not follow the input schema of `config`'s tool."""
    return value_problems(arguments, tool_input_schema(config))


def task_of(config: AgentConfig, arguments: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The task_data and the session (None: a new one) a call of `config`'s tool with
    `arguments` (already checked against its input schema) invokes it with."""
    task = dict(arguments)
    session = task.pop(SESSION_ARGUMENT, None) if takes_session(config) else None
    return task, session if isinstance(session, str) and session else None
