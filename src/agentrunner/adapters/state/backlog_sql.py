"""The backlog in SQL (`ports.backlog.Backlog`): one grouped read over the unfinished
executions, through `ix_executions_status_created` (only queued and running rows are read,
however long the history)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, and_, case, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from agentrunner.adapters.state.engine import SQLEngine, idempotent
from agentrunner.adapters.state.tables import ExecutionRow, PlanRunRow
from agentrunner.domain.execution import ExecutionStatus
from agentrunner.domain.plan import PlanRunStatus
from agentrunner.domain.tool_gates import PendingToolCall
from agentrunner.ports.backlog import AgentBacklog

EXECUTIONS = cast("Table", ExecutionRow.__table__)
PAUSED_RUNS = sorted(status.value for status in PlanRunStatus if status.is_paused)
_QUEUED = ExecutionStatus.QUEUED.value
_RUNNING = ExecutionStatus.RUNNING.value


class BacklogSQL(SQLEngine):
    """`Backlog` over the shared engine."""

    @idempotent
    async def backlog(self, agents: Sequence[str]) -> dict[str, AgentBacklog]:
        wanted = set(agents)
        queued = ExecutionRow.status == _QUEUED
        # A collaborative run's execution stays running while its run waits for a human.
        paused_run = exists().where(PlanRunRow.id == ExecutionRow.execution_id, PlanRunRow.status.in_(PAUSED_RUNS))
        fresh = and_(queued, ExecutionRow.started_at.is_(None))
        query = (
            select(
                ExecutionRow.agent,
                func.count().filter(queued).label("queued"),
                func.min(case((fresh, ExecutionRow.created_at))).label("oldest"),
                func.count().filter(and_(queued, ExecutionRow.started_at.is_not(None))).label("requeued"),
                func.count().filter(ExecutionRow.status == _RUNNING).label("in_hand"),
            )
            .where(or_(queued, and_(ExecutionRow.status == _RUNNING, ~paused_run)))
            .group_by(ExecutionRow.agent)
        )
        async with self._session() as session:
            rows = [row for row in (await session.execute(query)).all() if row.agent in wanted]
            requeued = [row.agent for row in rows if row.requeued]
            answered = await self._answered_at(session, requeued) if requeued else {}
        found = {
            row.agent: AgentBacklog(
                queued=row.queued,
                oldest_queued_at=min(
                    (at for at in (row.oldest, answered.get(row.agent)) if at is not None), default=None
                ),
                in_hand=row.in_hand,
            )
            for row in rows
        }
        return {agent: found.get(agent, AgentBacklog()) for agent in agents}

    @staticmethod
    async def _answered_at(session: AsyncConnection, agents: list[str]) -> dict[str, datetime]:
        """For executions queued again after a pause (started before, then answered): the
        oldest answer's time per agent, the moment each went back to waiting for a worker."""
        query = select(ExecutionRow.agent, ExecutionRow.pending_tool_call, ExecutionRow.created_at).where(
            ExecutionRow.status == _QUEUED, ExecutionRow.started_at.is_not(None), ExecutionRow.agent.in_(agents)
        )
        oldest: dict[str, datetime] = {}
        for row in (await session.execute(query)).all():
            since = row.created_at
            if row.pending_tool_call:
                answer = PendingToolCall.model_validate(row.pending_tool_call).answer
                since = answer.answered_at if answer is not None else since
            oldest[row.agent] = min(since, oldest.get(row.agent, since))
        return oldest
