"""Owners: the tenant of every object a caller can reach (sessions, plan runs, schedules,
dead letters, idempotency records), so lookups are scoped by it (issue 19).

A session's tenant is part of its key: team-a's session "s1" and team-b's are two rows.
Rows written before keep no tenant (`""` for sessions, NULL elsewhere): with API auth on
only admins see them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 05:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OWNED = ("plan_runs", "schedules", "dead_letters", "idempotency_keys")


def upgrade() -> None:
    with op.batch_alter_table("agent_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tenant", sa.String(length=64), server_default="", nullable=False))
        batch_op.drop_constraint("pk_agent_state", type_="primary")
        batch_op.create_primary_key("pk_agent_state", ["agent", "tenant", "session_id"])
    for table in _OWNED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("tenant", sa.String(length=64), nullable=True))
            batch_op.create_index(batch_op.f(f"ix_{table}_tenant"), ["tenant"], unique=False)


def downgrade() -> None:
    for table in reversed(_OWNED):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_tenant"))
            batch_op.drop_column("tenant")
    # Sessions of several tenants with one id cannot share the old key: keep the implicit
    # tenant's only.
    op.execute("DELETE FROM agent_state WHERE tenant <> ''")
    with op.batch_alter_table("agent_state", schema=None) as batch_op:
        batch_op.drop_constraint("pk_agent_state", type_="primary")
        batch_op.create_primary_key("pk_agent_state", ["agent", "session_id"])
        batch_op.drop_column("tenant")
