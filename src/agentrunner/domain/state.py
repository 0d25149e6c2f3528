"""Durable per-session state of an agent, and usage totals."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentrunner.domain.execution import utcnow


class AgentState(BaseModel):
    """What an agent remembers for one session: conversation history and free-form memory.

    `version` counts saves: a writer states the version it read, and a save over a newer
    one is refused (optimistic concurrency), so no update is lost silently.
    """

    model_config = ConfigDict(frozen=True)

    agent: str
    session_id: str
    # The tenant whose session it is: the same session id of two tenants names two
    # sessions. None with API auth off (one implicit tenant).
    tenant: str | None = None
    history: list[dict[str, Any]] = Field(default_factory=list)
    memory: dict[str, Any] = Field(default_factory=dict)
    version: int = 0
    updated_at: datetime = Field(default_factory=utcnow)


class AgentUsage(BaseModel):
    """Tokens and cost of one agent's executions over a time range."""

    model_config = ConfigDict(frozen=True)

    agent: str
    executions: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    # None when no execution in the range had a known price (unknown is not free).
    cost_usd: float | None = None


class UsageTotals(BaseModel):
    """Usage per agent and overall, for `GET /usage`."""

    model_config = ConfigDict(frozen=True)

    since: datetime | None = None
    until: datetime | None = None
    agents: list[AgentUsage] = Field(default_factory=list)
    executions: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None

    @classmethod
    def of(cls, agents: list[AgentUsage], *, since: datetime | None, until: datetime | None) -> UsageTotals:
        """The totals of `agents` over `[since, until)`: a cost when any agent has one."""
        costs = [a.cost_usd for a in agents if a.cost_usd is not None]
        return cls(
            since=since,
            until=until,
            agents=agents,
            executions=sum(a.executions for a in agents),
            input_tokens=sum(a.input_tokens for a in agents),
            output_tokens=sum(a.output_tokens for a in agents),
            cost_usd=round(sum(costs), 8) if costs else None,
        )
