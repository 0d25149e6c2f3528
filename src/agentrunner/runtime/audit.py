"""The audit writer: records each change a caller made (`domain/audit.py`) with who made
it, and reads the log back for admins.

An entry is written after the change succeeded, not in its transaction: the changes live
in different places (the registry, the bus, the store), and a change that happened is
answered as done. When the entry cannot be written (the database is down), the change is
not undone; the entry is logged at error level instead, whole, with the trace id, so the
record survives in the logs.
"""

from __future__ import annotations

from typing import Any

from agentrunner.domain.audit import AuditAction, AuditEntry, actor_name
from agentrunner.domain.errors import AgentRunnerError
from agentrunner.logs import get_logger
from agentrunner.ports.audit import AuditLog
from agentrunner.runtime.ownership import require_admin
from agentrunner.tracing import current_caller, current_trace_id

log = get_logger(__name__)

# The largest page `GET /audit` answers.
MAX_AUDIT_PAGE = 500


class Auditor:
    """Writes audit entries for the caller of the work in progress; `audit_log` None: an
    app built without one (tests of one app), where recording does nothing."""

    def __init__(self, audit_log: AuditLog | None) -> None:
        self._log = audit_log

    async def record(self, action: AuditAction, subject: str, **details: Any) -> None:
        """Record that the current caller did `action` to `subject`. Never raises: a write
        that fails is logged with the whole entry (see the module docstring)."""
        if self._log is None:
            return
        caller = current_caller()
        entry = AuditEntry(
            actor=actor_name(caller.tenant, admin=caller.admin),
            action=action,
            subject=subject,
            trace_id=current_trace_id(),
            details=details,
        )
        try:
            await self._log.record_audit(entry)
        except AgentRunnerError as exc:
            log.error("audit entry not written", entry=entry.model_dump(mode="json"), error=exc.message)

    async def entries(self, *, before: int | None, limit: int) -> list[AuditEntry]:
        """The newest `limit` entries below `before`, for an admin (else `AdminOnlyError`:
        the log names every tenant's actions)."""
        require_admin("GET /audit")
        if self._log is None:
            return []
        return await self._log.list_audit(before=before, limit=min(limit, MAX_AUDIT_PAGE))
