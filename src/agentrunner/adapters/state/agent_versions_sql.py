"""Versions of agents in SQL (`domain/agent_version.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.exc import IntegrityError

from agentrunner.adapters.state.engine import SQLEngine, idempotent
from agentrunner.adapters.state.tables import AgentVersionRow
from agentrunner.domain.agent_version import AgentVersion, FieldChange, LoadedContent, field_changes
from agentrunner.domain.errors import AgentVersionNotFoundError
from agentrunner.domain.execution import utcnow

VERSIONS = cast("Table", AgentVersionRow.__table__)
# Agent names in one IN list: far below every backend's bound on bound parameters.
_NAMES_PER_STATEMENT = 500


class AgentVersionsSQL(SQLEngine):
    """`AgentVersions` over the shared engine."""

    @idempotent  # by content: a content recorded already is found, not recorded again
    async def record_versions(self, contents: Sequence[LoadedContent]) -> list[AgentVersion]:
        try:
            return await self._record(contents)
        except IntegrityError:
            # Another config replica recorded the same next number first: read its version
            # (or record ours after it, when the contents differ).
            return await self._record(contents)

    async def _record(self, contents: Sequence[LoadedContent]) -> list[AgentVersion]:
        """One SELECT of the latest versions (per 500 agents) and one INSERT of the new ones,
        for any number of agents: every process records every agent at its start, and a
        SELECT per agent was seconds of a start with 1,000 agents."""
        async with self._session(write=True, atomic=True) as session:
            latest: dict[str, Any] = {}
            names = sorted({content.agent for content in contents})
            for at in range(0, len(names), _NAMES_PER_STATEMENT):
                heads = (
                    select(VERSIONS.c.agent, func.max(VERSIONS.c.version).label("version"))
                    .where(VERSIONS.c.agent.in_(names[at : at + _NAMES_PER_STATEMENT]))
                    .group_by(VERSIONS.c.agent)
                    .subquery()
                )
                rows = await session.execute(
                    select(VERSIONS).join(
                        heads, (VERSIONS.c.agent == heads.c.agent) & (VERSIONS.c.version == heads.c.version)
                    )
                )
                latest.update({row.agent: row for row in rows})
            recorded: list[AgentVersion] = []
            new_rows: list[dict[str, Any]] = []
            for content in contents:
                head = latest.get(content.agent)
                if head is not None and head.content_hash == content.content_hash:
                    recorded.append(_version(head))
                    continue
                row: dict[str, Any] = {
                    "agent": content.agent,
                    "version": head.version + 1 if head is not None else 1,
                    "content_hash": content.content_hash,
                    "text": content.text,
                    "document": content.document,
                    "config": content.config,
                    "changes": [
                        change.as_json()
                        for change in field_changes(head.document if head is not None else None, content.document)
                    ],
                    "created_at": utcnow(),
                }
                new_rows.append(row)
                recorded.append(_version_of(row))
            if new_rows:
                await session.execute(insert(VERSIONS), new_rows)
        return recorded

    @idempotent
    async def list_versions(self, agent: str) -> list[AgentVersion]:
        async with self._session() as session:
            rows = (
                await session.execute(
                    select(VERSIONS).where(VERSIONS.c.agent == agent).order_by(VERSIONS.c.version.desc())
                )
            ).all()
        return [_version(row) for row in rows]

    @idempotent
    async def get_version(self, agent: str, version: int) -> AgentVersion:
        async with self._session() as session:
            row = (
                await session.execute(select(VERSIONS).where(VERSIONS.c.agent == agent, VERSIONS.c.version == version))
            ).first()
            if row is None:
                latest = (
                    await session.execute(select(func.max(VERSIONS.c.version)).where(VERSIONS.c.agent == agent))
                ).scalar()
        if row is None:
            raise AgentVersionNotFoundError(
                f"agent {agent!r} has no version {version}: its versions are 1 to {latest or 0}"
                f" (GET /agents/{agent}/versions)",
                agent=agent,
                version=version,
            )
        return _version(row)


def _version(row: Any) -> AgentVersion:
    return _version_of(row._mapping)


def _version_of(row: Any) -> AgentVersion:
    return AgentVersion(
        agent=row["agent"],
        version=row["version"],
        content_hash=row["content_hash"],
        created_at=row["created_at"],
        text=row["text"],
        changes=[FieldChange(c["field"], c.get("before"), c.get("after")) for c in row["changes"]],
        config=row["config"],
    )
