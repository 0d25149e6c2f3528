"""The audit log port: who changed what."""

from __future__ import annotations

from typing import Protocol

from agentrunner.domain.audit import AuditEntry


class AuditLog(Protocol):
    """Who changed what: an append-only record of the changes callers make (see
    `domain/audit.py`), a facet of the state store of its own because only the audit writer and `GET /audit` use it.

    Contract: `record_audit` appends one entry and returns it with its `id`, larger than
    every id before it; `list_audit` returns at most `limit` entries, newest first, only
    those with an id below `before` when it is given. Nothing in agentrunner changes or
    deletes an entry. Both raise `DependencyUnavailableError` when the database is not
    answering.
    """

    async def record_audit(self, entry: AuditEntry) -> AuditEntry:
        """Append `entry`; it as stored, with its id."""
        ...

    async def list_audit(self, *, before: int | None = None, limit: int = 100) -> list[AuditEntry]:
        """The newest `limit` entries (with an id below `before`, when given), newest first."""
        ...
