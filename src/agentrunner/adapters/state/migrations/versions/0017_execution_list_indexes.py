"""Indexes that keep the execution lists and `/usage` fast over a large history: every
filter of `GET /executions` (tenant, agent, status, and a tenant's agent or status) leads
an index that ends in the listing's order (created_at, execution_id), so a page is a short
index range at any depth; on PostgreSQL the indexes `/usage` ranges over also carry the
columns it sums, so it reads a month from the index alone (no table reads).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 03:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What `/usage` sums, carried in the indexes it ranges over (PostgreSQL only: SQLite has no INCLUDE).
TOKENS = ["input_tokens", "output_tokens", "cost_usd"]
USAGE_COLUMNS = ["agent", *TOKENS]


def upgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index("ix_executions_tenant")
        batch_op.drop_index("ix_executions_status")
        batch_op.drop_index("ix_executions_agent_created")
        batch_op.drop_index("ix_executions_created")
        batch_op.create_index("ix_executions_created", ["created_at", "execution_id"], postgresql_include=USAGE_COLUMNS)
        batch_op.create_index(
            "ix_executions_tenant_created",
            ["tenant", "created_at", "execution_id"],
            postgresql_include=USAGE_COLUMNS,
        )
        batch_op.create_index(
            "ix_executions_agent_created", ["agent", "created_at", "execution_id"], postgresql_include=TOKENS
        )
        batch_op.create_index("ix_executions_status_created", ["status", "created_at", "execution_id"])
        batch_op.create_index(
            "ix_executions_tenant_agent_created",
            ["tenant", "agent", "created_at", "execution_id"],
            postgresql_include=TOKENS,
        )
        batch_op.create_index("ix_executions_tenant_status_created", ["tenant", "status", "created_at", "execution_id"])


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index("ix_executions_tenant_status_created")
        batch_op.drop_index("ix_executions_tenant_agent_created")
        batch_op.drop_index("ix_executions_status_created")
        batch_op.drop_index("ix_executions_agent_created")
        batch_op.drop_index("ix_executions_tenant_created")
        batch_op.drop_index("ix_executions_created")
        batch_op.create_index("ix_executions_created", ["created_at", "execution_id"])
        batch_op.create_index("ix_executions_agent_created", ["agent", "created_at"])
        batch_op.create_index("ix_executions_status", ["status"])
        batch_op.create_index("ix_executions_tenant", ["tenant"])
