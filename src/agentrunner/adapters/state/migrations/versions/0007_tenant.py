"""Tenants: the API key (as `key-<hash>`) whose request started an execution, for the
per-tenant concurrency limit and budget.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 00:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tenant", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_executions_tenant"), ["tenant"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_executions_tenant"))
        batch_op.drop_column("tenant")
