"""`GET /queues`: per worker pool and agent, the messages waiting, the executions workers
hold and the oldest wait (runtime/queues.py), to include in the orchestrator app.

Admins only: the figures count every tenant's work (a tenant would learn how busy the
others are), and an autoscaler or an operator is who asks."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from agentrunner.domain.execution import utcnow
from agentrunner.ports.backlog import AgentQueueFigures
from agentrunner.runtime.ownership import require_admin
from agentrunner.runtime.queues import POOL_OF_MODE, QueueReport

_READY = "Messages in the queue waiting for a worker (the bus's own count)."
_UNACKNOWLEDGED = "Executions a worker holds (running); a run paused for a human is not counted."
_OLDEST = "Seconds the oldest queued execution has waited for a worker (null: none waits)."


class AgentQueueView(BaseModel):
    """One agent's queue."""

    agent: str
    queue: str = Field(description="The agent's queue (on RabbitMQ, under RABBITMQ_EXCHANGE_PREFIX + `.q.`).")
    ready: int = Field(description=_READY)
    unacknowledged: int = Field(description=_UNACKNOWLEDGED)
    oldest_queued_age_seconds: float | None = Field(description=_OLDEST)


class PoolQueuesView(BaseModel):
    """The queues of one worker pool's agents, and their sums (the oldest wait: the longest)."""

    pool: str = Field(description="autonomous (autonomous and scheduled agents), continuous or collaborative.")
    ready: int = Field(description=_READY)
    unacknowledged: int = Field(description=_UNACKNOWLEDGED)
    oldest_queued_age_seconds: float | None = Field(description=_OLDEST)
    agents: list[AgentQueueView]


class QueueReportView(BaseModel):
    """Every pool (each one listed, even without agents) with its agents' queues."""

    measured_at: datetime
    pools: list[PoolQueuesView]


def pool_views(figures: list[AgentQueueFigures]) -> list[PoolQueuesView]:
    """`figures` grouped by pool, every pool listed."""
    pools = []
    for pool in dict.fromkeys(POOL_OF_MODE.values()):
        agents = [
            AgentQueueView(
                agent=figure.agent,
                queue=figure.queue,
                ready=figure.ready,
                unacknowledged=figure.unacknowledged,
                oldest_queued_age_seconds=figure.oldest_queued_age_seconds,
            )
            for figure in figures
            if figure.pool == pool
        ]
        waits = [agent.oldest_queued_age_seconds for agent in agents if agent.oldest_queued_age_seconds is not None]
        pools.append(
            PoolQueuesView(
                pool=pool,
                ready=sum(agent.ready for agent in agents),
                unacknowledged=sum(agent.unacknowledged for agent in agents),
                oldest_queued_age_seconds=max(waits, default=None),
                agents=agents,
            )
        )
    return pools


def queue_routes(report: QueueReport) -> APIRouter:
    """`GET /queues` over `report`."""
    router = APIRouter(tags=["queues"])

    @router.get(
        "/queues",
        response_model=QueueReportView,
        summary="Backlog per worker pool and agent: messages waiting, work held, oldest wait (admins only)",
    )
    async def queues() -> QueueReportView:
        """What autoscalers read: per pool and agent, the messages waiting in the agent's
        queue, the executions workers hold, and how long the oldest queued execution has
        waited. A run paused for a human (an approval, an answer) is not backlog. 403
        `admin_only` for a tenant's key; 503 when the bus or the database does not answer."""
        require_admin("GET /queues")
        figures = await report.measure()
        return QueueReportView(measured_at=utcnow(), pools=pool_views(figures))

    return router
