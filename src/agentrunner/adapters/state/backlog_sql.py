"""The backlog in SQL (`ports.backlog.Backlog`): one grouped read of the unfinished
executions through `ix_executions_status_created` (only queued and running rows are read,
however long the history: on PostgreSQL under load, 13 ms p50 with 100 queued and 83 ms
with 10,000, bench/queues.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import and_, case, exists, func, or_, select

from agentrunner.adapters.state.engine import SQLEngine, idempotent
from agentrunner.adapters.state.tables import ExecutionRow, PlanRunRow
from agentrunner.domain.execution import ExecutionStatus
from agentrunner.domain.plan import PlanRunStatus
from agentrunner.ports.backlog import AgentBacklog

PAUSED_RUNS = sorted(status.value for status in PlanRunStatus if status.is_paused)
_QUEUED = ExecutionStatus.QUEUED.value
_RUNNING = ExecutionStatus.RUNNING.value


class BacklogSQL(SQLEngine):
    """`Backlog` over the shared engine."""

    @idempotent
    async def backlog(self, agents: Sequence[str]) -> dict[str, AgentBacklog]:
        queued = ExecutionRow.status == _QUEUED
        # A collaborative run's execution stays running while its run waits for a human.
        paused_run = exists().where(PlanRunRow.id == ExecutionRow.execution_id, PlanRunRow.status.in_(PAUSED_RUNS))
        # Queued again after a pause (started before, then a human answered): it waits
        # since the answer (ISO 8601 text in UTC, so the smallest text is the earliest).
        answered_at = ExecutionRow.pending_tool_call["answer"]["answered_at"].as_string()
        query = (
            select(
                ExecutionRow.agent,
                func.count().filter(queued).label("queued"),
                func.min(case((and_(queued, ExecutionRow.started_at.is_(None)), ExecutionRow.created_at))).label(
                    "oldest"
                ),
                func.min(case((and_(queued, ExecutionRow.started_at.is_not(None)), answered_at))).label("answered"),
                func.count().filter(ExecutionRow.status == _RUNNING).label("in_hand"),
            )
            # The IN lets the status index serve both branches of the OR.
            .where(
                ExecutionRow.status.in_([_QUEUED, _RUNNING]),
                or_(queued, ~paused_run),
            )
            .group_by(ExecutionRow.agent)
        )
        async with self._session() as session:
            rows = (await session.execute(query)).all()
        found = {
            row.agent: AgentBacklog(
                queued=row.queued, oldest_queued_at=_earliest(row.oldest, row.answered), in_hand=row.in_hand
            )
            for row in rows
        }
        return {agent: found.get(agent, AgentBacklog()) for agent in agents}


def _earliest(created: datetime | None, answered: str | None) -> datetime | None:
    times = [created] if created is not None else []
    if answered:
        at = datetime.fromisoformat(answered)
        times.append(at if at.tzinfo else at.replace(tzinfo=UTC))
    return min(times, default=None)
