"""Who may name a record: its owner tenant, or an admin (ARCHITECTURE §10).

Lists filter in the store (`tenant=visible_tenant()`); a record read by id goes through
`owned`, which answers another tenant's record exactly as a missing one (the same error,
the same message), so a caller learns nothing about ids it does not own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from agentrunner.domain.errors import AdminOnlyError, AgentRunnerError, StateNotFoundError
from agentrunner.tracing import current_tenant, visible_tenant

_Record = TypeVar("_Record")


def may_see(owner: str | None) -> bool:
    """True when the caller may name a record owned by `owner` (an admin, auth off, or
    the owner itself; a record without an owner is the operator's: admins only)."""
    seen = visible_tenant()
    return seen is None or owner == seen


def owned(record: _Record, owner: str | None, missing: Callable[[], AgentRunnerError]) -> _Record:
    """`record` when the caller may see it, else raise `missing()`: the not-found error
    of its kind."""
    if not may_see(owner):
        raise missing()
    return record


def require_admin(action: str) -> None:
    """Raise `AdminOnlyError` unless the caller may act on the whole platform (an admin,
    or anyone with auth off): `action` names what was asked, for the message."""
    if visible_tenant() is not None:
        raise AdminOnlyError(f"{action} acts on every tenant: it needs a key of ADMIN_API_KEYS")


def session_owner(agent: str, session_id: str, tenant: str | None) -> str | None:
    """The tenant whose session the caller names: its own; an admin may name another's
    (`tenant`). A tenant naming another's gets the answer of a session that does not exist."""
    if tenant is None or tenant == current_tenant():
        return current_tenant()
    if visible_tenant() is None:
        return tenant
    raise StateNotFoundError(f"no state for agent {agent!r} session {session_id!r}")
