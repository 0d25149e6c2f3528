"""An execution: one run of one agent for one task.

Its status moves queued -> running -> a terminal status, and a few writers move it
otherwise on purpose (a schedule's watch records a queued run, or one its worker
cancelled, as timed out). Those moves are not checked here: a check on a status read
earlier would race with the other writers. Each writer names the statuses it may move
from (`ExecutionStore.save_execution(only_if=...)`, `start_execution`), and the store checks
them in the same statement as the write, so of two writers racing one wins and the other
gets a `ConflictError`."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentrunner.domain.tool_gates import PendingToolCall


class ExecutionStatus(StrEnum):
    """Where an execution is in its life; a terminal one has ended."""

    QUEUED = "queued"
    RUNNING = "running"
    # Stopped before a tool call until a human answers (`pending_tool_call` says which and
    # why: an approval gate, or an outcome a crash left unknown); it holds no worker.
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT, ExecutionStatus.CANCELLED}
)


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (the only clock the domain uses)."""
    return datetime.now(UTC)


class Usage(BaseModel):
    """Tokens a provider counted for one or more calls."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


class ExecutionError(BaseModel):
    """Why an execution did not succeed."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str


class ToolCallRecord(BaseModel):
    """One tool call of an execution: what the model asked, what it got back, how long it took."""

    model_config = ConfigDict(frozen=True)

    call_id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: str | None = None
    error: str | None = None
    # The round of the agent loop (1 for the model's first answer).
    iteration: int = 1
    started_at: datetime
    finished_at: datetime
    duration_ms: float


class FailedCheck(BaseModel):
    """One of its agent's online `checks` (domain/checks.py) a succeeded run's answer failed:
    the check's label (its `name`, else its type), its type, and why it failed."""

    model_config = ConfigDict(frozen=True)

    check: str
    kind: str
    detail: str = ""


SLACK_ORIGIN = "slack"


class ReplayOf(BaseModel):
    """The execution a replay (`POST /executions/{id}/replay`) started from: its first
    `from_step` steps were reused from that execution's journal, the rest run anew."""

    model_config = ConfigDict(frozen=True)

    execution_id: str
    from_step: int


class Execution(BaseModel):
    """The durable record of one agent run (ARCHITECTURE §9 'finished execution')."""

    model_config = ConfigDict(frozen=True)

    execution_id: str
    agent: str
    status: ExecutionStatus = ExecutionStatus.QUEUED
    input: dict[str, Any] = Field(default_factory=dict)
    session_id: str | None = None
    output: str | None = None
    # The answer parsed, for an agent with an `output_schema` (`output` holds it as compact
    # JSON text then, for everything that reads text): what chains and webhooks receive.
    output_json: Any = None
    error: ExecutionError | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = None
    attempts: int = 0
    provider: str | None = None
    model: str | None = None
    # The node (process) that ran the last attempt, for audits and load checks.
    worker: str | None = None
    # The schedule whose tick created it (scheduled runs only).
    schedule_id: str | None = None
    webhook_url: str | None = None
    # The API key (as `key-<hash>`) whose request started it, when API auth is on.
    tenant: str | None = None
    # Where the request came from, set only by the platform's gateways (never from task_data):
    # {"kind": "slack", "response_url", "channel_id", "thread_ts", "team_id", "user_id"} for
    # the Slack gateway's runs, whose answers go back to Slack. None: an API call, a schedule.
    origin: dict[str, Any] | None = None
    # How many agent outputs (or tool-published events) led to it: 0 when a caller, a
    # schedule or an outside event started it. Past MAX_CHAIN_DEPTH the next agent does not run.
    chain_depth: int = 0
    # The execution this one replays, when a replay started it (debugging from a given step).
    replay_of: ReplayOf | None = None
    # The version of its agent it was created on (domain/agent_version.py); None when the
    # node that created it had not learned the loaded content's number yet.
    agent_version: int | None = None
    # The agent's online checks its answer failed, recorded with its end (domain/checks.py):
    # with `on_check_failure: flag` it still succeeded; with `fail` it failed (check_failed).
    failed_checks: list[FailedCheck] = Field(default_factory=list)
    # Every tool call of the attempt that ended it, in the order they finished.
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    # The tool call it waits on while `waiting_approval`, then with the human's answer until
    # a run has used it (domain/tool_gates.py).
    pending_tool_call: PendingToolCall | None = None
    trace_id: str
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def slack_origin(self) -> dict[str, Any] | None:
        """The Slack request this execution answers, when the Slack gateway started it."""
        return slack_origin_of(self.origin)


def slack_origin_of(origin: dict[str, Any] | None) -> dict[str, Any] | None:
    """`origin` when it is a Slack request's (set by the Slack gateway), else None."""
    if isinstance(origin, dict) and origin.get("kind") == SLACK_ORIGIN:
        return origin
    return None
