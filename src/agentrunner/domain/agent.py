"""The agent definition: one YAML file per agent, validated into these models.

Unknown keys are kept (files written for other implementations must load unchanged) and
reported as warnings by `agent_document.parse_agent_document`, so typos still surface.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from agentrunner.domain.checks import MAX_CHECKS, Check, OnCheckFailure
from agentrunner.domain.egress import parse_networks
from agentrunner.domain.llm import ANSWER_TOOL_NAME
from agentrunner.domain.structured_output import schema_problem
from agentrunner.domain.topics import RESERVED_TOPIC_ROOTS, is_reserved_topic, pattern_problem
from agentrunner.domain.webhook import WEBHOOK_URL_PATTERN


def _check_cron(value: str) -> str:
    if len(value.split()) != 5 or not croniter.is_valid(value):
        raise ValueError(
            f"invalid cron {value!r}: expected 5 fields "
            "'minute hour day-of-month month day-of-week', e.g. \"0 9 * * 1-5\""
        )
    return value


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {value!r}: use an IANA name such as 'UTC' or 'Europe/Paris'") from exc
    return value


# A 5-field cron expression, and an IANA time zone name, as schedules take them.
CronExpression = Annotated[str, AfterValidator(_check_cron)]
TimeZoneName = Annotated[str, AfterValidator(_check_timezone)]


AGENT_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


def _relative_schema_path(value: str) -> str:
    parts = value.replace("\\", "/").split("/")
    if value.startswith("/") or ":" in parts[0] or ".." in parts:
        raise ValueError(
            f"schema file {value!r} must be a path relative to the agent file, inside the agents directory "
            "(e.g. 'schemas/invoice.json'), or the schema itself as a mapping"
        )
    return value


# The path of a schema file, relative to the agent file that names it.
SchemaFileReference = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_relative_schema_path)]


class ExecutionMode(StrEnum):
    """How the platform runs an agent."""

    COLLABORATIVE = "collaborative"
    AUTONOMOUS = "autonomous"
    CONTINUOUS = "continuous"
    SCHEDULED = "scheduled"


class ProviderName(StrEnum):
    """LLM providers an agent may name; `echo` and `scripted` run offline."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    BEDROCK = "bedrock"
    OLLAMA = "ollama"
    ECHO = "echo"
    SCRIPTED = "scripted"


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Pricing(_Section):
    """An agent's own price for its model, in USD per million tokens."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class LLMConfig(_Section):
    """Which model answers for the agent, and how."""

    provider: ProviderName
    model: str = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    region: str | None = None
    host: str | None = None
    # Calls per request when the vendor rate-limits or fails on its side (auth and bad
    # requests are never tried again).
    max_attempts: int = Field(default=3, ge=1, le=10)
    pricing: Pricing | None = None


class ScheduleConfig(_Section):
    """When the scheduler fires the agent, and with what input."""

    type: Literal["cron", "interval"]
    cron: CronExpression | None = None
    interval_seconds: float | None = Field(default=None, gt=0)
    timezone: TimeZoneName = "UTC"
    task_data: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=300, gt=0)
    # Optional, with the defaults of ARCHITECTURE §4 (see domain/schedule.py for the rules).
    start_at: datetime | None = None
    jitter_seconds: float = Field(default=0, ge=0)
    misfire_policy: Literal["skip", "run_once"] = "run_once"
    misfire_grace_seconds: float = Field(default=60, gt=0)
    overlap_policy: Literal["skip", "allow", "queue_one"] = "skip"

    @model_validator(mode="after")
    def _fields_for_type(self) -> ScheduleConfig:
        if self.type == "cron" and not self.cron:
            raise ValueError("type 'cron' needs a 'cron' expression such as \"0 9 * * *\"")
        if self.type == "interval" and self.interval_seconds is None:
            raise ValueError("type 'interval' needs 'interval_seconds' greater than 0")
        if self.jitter_seconds and (self.type != "interval" or self.jitter_seconds >= (self.interval_seconds or 0)):
            raise ValueError("'jitter_seconds' applies to interval schedules and must be below 'interval_seconds'")
        if self.start_at is not None and self.start_at.tzinfo is None:
            raise ValueError("'start_at' needs a timezone, e.g. 2026-01-01T09:00:00Z")
        return self


_SECRET_HEADER = re.compile(r"(authorization|api[_-]?key|token|secret|cookie|password)", re.IGNORECASE)
_ENV_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


def _topic_pattern(pattern: str) -> str:
    problem = pattern_problem(pattern)
    if problem:
        raise ValueError(problem)
    return pattern


def _publishable_pattern(pattern: str) -> str:
    _topic_pattern(pattern)
    if is_reserved_topic(pattern):
        raise ValueError(
            f"{pattern!r} names a topic reserved for agentrunner itself ({', '.join(RESERVED_TOPIC_ROOTS)}): "
            "publish_event never writes there; list topics of your own, e.g. 'orders.#'"
        )
    return pattern


HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


class ToolConfig(_Section):
    """A tool entry of an agent: a built-in or installed tool named by `name`, an MCP
    server whose tools are offered as `<name>__<tool>`, or a remote A2A agent offered as
    the one tool `<name>` (its `url` is the agent card's)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]{1,48}$")
    type: Literal["builtin", "mcp", "a2a"] = "builtin"
    description: str = ""
    # MCP over HTTP: streamable HTTP, or SSE for older servers (a URL ending in /sse).
    # A2A: the URL of the remote agent's card (e.g. https://host/.well-known/agent-card.json).
    url: str | None = None
    transport: Literal["streamable_http", "sse"] | None = None
    # Values may reference the environment as ${VAR}: expanded when connecting, never stored.
    headers: dict[str, str] = Field(default_factory=dict)
    # MCP over stdio: the server's program, its arguments and environment (${VAR} expanded).
    command: str | list[str] | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    # How long one call of this tool may take before the model gets a timeout error.
    timeout_seconds: float = Field(default=30, gt=0)
    # Whether a call of this entry's tools (every tool of an MCP server) may be made again
    # when a crash left its outcome unknown, overriding what the tool says of itself (a
    # built-in's own rule, an MCP server's annotations). None: the tool's own word.
    idempotent: bool | None = None
    # Every call of this entry's tools waits for a human's approval before it runs (the
    # execution is `waiting_approval` meanwhile, holding no worker): POST
    # /executions/{id}/approve runs it, /deny tells the model it was refused.
    requires_approval: bool = False
    # http_request: the hosts it may call (exact names, or `*.example.com`), the methods the
    # model may use (GET only unless widened), and networks (CIDRs) it may reach although they
    # are not public (besides EGRESS_ALLOWED_NETWORKS): an internal service named on purpose.
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_methods: list[HttpMethod] = Field(default_factory=lambda: list[HttpMethod](["GET"]), min_length=1)
    allowed_networks: list[str] = Field(default_factory=list)
    # publish_event: the topics it may publish (patterns, `*` one word, `#` any); empty: any
    # topic but the platform's own, which are refused whatever this says.
    allowed_topics: list[Annotated[str, AfterValidator(_publishable_pattern)]] = Field(
        default_factory=list, max_length=100
    )

    @model_validator(mode="after")
    def _mcp_has_endpoint(self) -> ToolConfig:
        if self.type == "mcp" and not (self.url or self.command):
            raise ValueError("an 'mcp' tool needs a 'url' (HTTP server) or a 'command' (stdio server)")
        if self.type == "a2a" and (not self.url or self.command):
            raise ValueError("an 'a2a' tool needs a 'url' (the remote agent's card) and no 'command'")
        if self.url and self.command:
            raise ValueError("an 'mcp' tool takes either 'url' or 'command', not both")
        return self

    @field_validator("allowed_methods", mode="before")
    @classmethod
    def _upper(cls, methods: object) -> object:
        return [m.upper() if isinstance(m, str) else m for m in methods] if isinstance(methods, list) else methods

    @field_validator("allowed_networks")
    @classmethod
    def _cidrs(cls, networks: list[str]) -> list[str]:
        return [str(network) for network in parse_networks(networks)]

    @field_validator("headers")
    @classmethod
    def _secrets_by_reference(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if _SECRET_HEADER.search(name) and not _ENV_REFERENCE.search(value):
                raise ValueError(
                    f"header {name!r} carries a secret: write it as an environment reference, "
                    f'e.g. "Bearer ${{KB_TOKEN}}", so it is never stored in the clear'
                )
        return headers

    @property
    def argv(self) -> list[str]:
        """The stdio server's command line: `command` (a string or a list) then `args`."""
        command = [self.command] if isinstance(self.command, str) else list(self.command or [])
        return [*command, *self.args]

    @property
    def http_transport(self) -> Literal["streamable_http", "sse"]:
        """The HTTP transport: the one named, else SSE for a URL ending in /sse."""
        if self.transport is not None:
            return self.transport
        return "sse" if (self.url or "").rstrip("/").endswith("/sse") else "streamable_http"


class PlanningAgentConfig(_Section):
    """The model that writes a collaborative plan (defaults to the agent's own)."""

    provider: ProviderName | None = None
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)


class CollaborativeConfig(_Section):
    """Plan-and-execute settings of a collaborative agent."""

    preferred_collaborators: list[str] = Field(default_factory=list)
    planning_agent: PlanningAgentConfig | None = None
    max_plan_steps: int = Field(default=10, gt=0)
    require_plan_approval: bool = False
    allow_human_clarification: bool = True
    clarification_timeout_seconds: float = Field(default=3600, gt=0)


class ContinuousConfig(_Section):
    """Session settings of a continuous agent."""

    idle_timeout_seconds: float = Field(default=600, gt=0)
    save_interval_seconds: float = Field(default=60, gt=0)
    max_conversation_history: int = Field(default=100, gt=0)
    # A new message to a session whose previous one is still queued or running: wait
    # behind it, be refused (409 session_busy), or cancel it first, keeping its user
    # message in the history (interrupt) or leaving no trace of it (rollback).
    on_busy: Literal["enqueue", "reject", "interrupt", "rollback"] = "enqueue"


class RetryConfig(_Section):
    """How often a failed task is tried again with a fresh context."""

    max_retries: int = Field(default=2, ge=0)
    retry_delay_seconds: float = Field(default=1, ge=0)
    exponential_backoff: bool = True
    # A retry goes on from the failed attempt's journal (its model and tool calls replayed,
    # not made again) instead of starting fresh. A re-run after a crash always goes on.
    resume: bool = False


class LimitsConfig(_Section):
    """Guardrails of one agent: how many of its executions run at once (across every
    worker process), how many model calls and tokens a minute, and what it may spend per
    day or month."""

    max_concurrency: int | None = Field(default=None, ge=1)
    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    budget_usd: float | None = Field(default=None, gt=0)
    budget_period: Literal["day", "month"] = "day"


class ExposeConfig(_Section):
    """Where else than REST the agent may be called: as a tool of the orchestrator's MCP
    server, and as an agent of its A2A endpoints. Both on unless turned off."""

    mcp: bool = True
    a2a: bool = True


class AgentConfig(_Section):
    """One agent, as its YAML file defines it."""

    name: str = Field(pattern=AGENT_NAME_PATTERN)
    agent_type: str = Field(min_length=1)
    execution_mode: ExecutionMode
    description: str = ""
    llm_config: LLMConfig
    system_prompt: str = ""
    tags: list[str] = Field(default_factory=list)
    event_subscriptions: list[Annotated[str, AfterValidator(_topic_pattern)]] = Field(default_factory=list)
    # Validated even when absent, so a scheduled agent without one is reported at this path.
    schedule_config: ScheduleConfig | None = Field(default=None, validate_default=True)
    collaborative_config: CollaborativeConfig | None = None
    continuous_config: ContinuousConfig | None = None
    retry_config: RetryConfig = Field(default_factory=RetryConfig)
    tools: list[ToolConfig] = Field(default_factory=list)
    # The agent loop: rounds of tool calls per run, tool calls per execution, and the
    # characters of one tool result the model sees (the rest cut, with a marker).
    max_tool_iterations: int = Field(default=10, ge=1, le=100)
    max_tool_calls: int = Field(default=50, ge=1)
    tool_result_max_chars: int = Field(default=20000, ge=100)
    timeout_seconds: float = Field(default=300, gt=0)
    # A tool call a crash cut short (started, no outcome recorded) that is not safe to repeat
    # (`idempotent`, the tool's own word): wait for a human to say what happened (ask), run
    # it again (retry), or fail the execution (fail). Safe calls are simply run again.
    on_unknown_tool_outcome: Literal["ask", "retry", "fail"] = "ask"
    webhook_url: str | None = Field(default=None, max_length=2048, pattern=WEBHOOK_URL_PATTERN)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    # Structured output: the JSON Schema the answer must follow, written here or as the path
    # of a schema file (JSON or YAML) relative to the agent file, inside the agents directory
    # (resolved when the directory is loaded: adapters/config/files.py). An answer that does
    # not follow it is sent back with the problems found, `output_retries` times at most.
    output_schema: dict[str, Any] | SchemaFileReference | None = None
    output_retries: int = Field(default=2, ge=0, le=10)
    # The JSON Schema task_data must follow (an object's): checked on every invocation (422
    # input_invalid), and the input schema of the agent's tool on the MCP server.
    input_schema: dict[str, Any] | None = None
    # Online checks (domain/checks.py): the expectations of eval cases, run on each execution
    # that succeeds; one failed is recorded on it and counted (flag), or fails it (fail).
    checks: list[Check] = Field(default_factory=list, max_length=MAX_CHECKS)
    on_check_failure: OnCheckFailure = "flag"
    expose: ExposeConfig = Field(default_factory=ExposeConfig)

    @property
    def response_schema(self) -> dict[str, Any] | None:
        """The answer's JSON Schema, once resolved (a file reference not yet read: None)."""
        return self.output_schema if isinstance(self.output_schema, dict) else None

    def requires_approval(self, tool: str) -> bool:
        """Whether a call of `tool` (a built-in's name, or an MCP server's `<entry>__<tool>`)
        waits for a human's approval: its entry says `requires_approval`."""
        for entry in self.tools:
            if entry.requires_approval and (tool == entry.name or tool.startswith(f"{entry.name}__")):
                return True
        return False

    @field_validator("schedule_config")
    @classmethod
    def _scheduled_has_schedule(cls, schedule: ScheduleConfig | None, info: ValidationInfo) -> ScheduleConfig | None:
        if info.data.get("execution_mode") is ExecutionMode.SCHEDULED and schedule is None:
            raise ValueError("execution_mode 'scheduled' needs a 'schedule_config' (type cron or interval)")
        return schedule

    @field_validator("checks")
    @classmethod
    def _checked_in_a_pool(cls, checks: list[Check], info: ValidationInfo) -> list[Check]:
        # Checks run where an agent pool ends an execution; a collaborative agent's execution
        # ends with its plan run, elsewhere: refused rather than silently never checked.
        if checks and info.data.get("execution_mode") is ExecutionMode.COLLABORATIVE:
            raise ValueError(
                "a collaborative agent takes no checks (its answer is its plan run's synthesis): "
                "give them to the agents its steps run"
            )
        return checks

    @field_validator("output_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | str | None) -> dict[str, Any] | str | None:
        # A collaborative agent's answer is its synthesis, checked as any answer is.
        if isinstance(schema, dict):
            problem = schema_problem(schema)
            if problem:
                raise ValueError(problem)
        return schema

    @field_validator("input_schema")
    @classmethod
    def _valid_input_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is None:
            return None
        problem = schema_problem(schema)
        if problem:
            raise ValueError(problem)
        if schema.get("type") != "object":
            raise ValueError('task_data is an object: input_schema needs "type": "object"')
        return schema

    @field_validator("tools")
    @classmethod
    def _unique_tool_names(cls, tools: list[ToolConfig]) -> list[ToolConfig]:
        names = [tool.name for tool in tools]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"tool names must be unique, repeated: {', '.join(duplicates)}")
        if ANSWER_TOOL_NAME in names:
            raise ValueError(f"tool name {ANSWER_TOOL_NAME!r} is reserved for the structured answer (output_schema)")
        return tools
