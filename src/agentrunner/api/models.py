"""The shapes the orchestrator answers with, on pydantic and the domain only: the API and
its Python client (`agentrunner.client`) share them, and an application that imports the
client does not load the platform behind them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from agentrunner.api.steps import ExecutionWithSteps
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.plan import PlanRun, WaitingStep
from agentrunner.domain.webhook import WebhookDelivery
from agentrunner.ports.tools import Repeatable


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
    # One line (at most 80 characters) for lists: why it cannot run fully, or null.
    short_reason: str | None = None
    # The whole story: every reason, with where to look and what to do.
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
    # Per offered tool: whether a call may be made again when a crash left its outcome
    # unknown (`always`, `never`, or `per_call`: decided from each call's arguments, e.g.
    # `http_request` allowing POST repeats its GET and HEAD calls only). From the tool
    # itself (an MCP server's annotations) unless the tool entry says `idempotent`.
    offered_tools_repeatable: dict[str, Repeatable]
    warnings: list[str]


class Published(BaseModel):
    """Answer of `POST /events`."""

    event_id: str
    topic: str
    trace_id: str


class Accepted(BaseModel):
    """Answer of an invocation that had not finished within `wait`."""

    execution_id: str
    status: ExecutionStatus
    trace_id: str
    session_id: str | None = Field(
        default=None, description="The session it continues (a new one when none was given); absent without one."
    )


class ExecutionDetail(ExecutionWithSteps):
    """An execution, with the journal of its model and tool calls and the delivery of its
    record to its webhook (when it has one)."""

    webhook: WebhookDelivery | None = Field(
        default=None, description="Attempts to POST the record to webhook_url, once the execution ended."
    )


class ExecutionListItem(Execution):
    """An execution as a list shows it: input, output, tool calls and the pending tool call cut to a preview."""

    truncated: bool = Field(
        default=False, description="Something was cut to a preview: GET /executions/{id} has the whole record."
    )


class ExecutionList(BaseModel):
    """A page of executions, newest first."""

    items: list[ExecutionListItem]
    next_cursor: str | None


class PlanRunList(BaseModel):
    """Plan runs, newest first."""

    items: list[PlanRun]


class PlanRunView(PlanRun):
    """A plan run, and the tool calls its steps wait on."""

    waiting_steps: list[WaitingStep] = Field(
        default_factory=list,
        description="Each step whose execution waits for a human before a tool call (status waiting_approval), "
        "with that call (its arguments cut to a preview): answer it on the execution, with "
        "POST /executions/{execution_id}/approve, /deny or /tool-outcome.",
    )
