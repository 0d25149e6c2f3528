"""Retention: the usage of purged executions, rolled up per agent, tenant and hour, and the
indexes the purge walks in order of age.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 18:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column): where the purge finds the oldest rows of a kind without a scan.
AGE_INDEXES = [
    ("plan_runs", "created_at"),
    ("schedule_fires", "fired_at"),
    ("dead_letters", "created_at"),
    ("webhook_deliveries", "created_at"),
]


def upgrade() -> None:
    counter = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "usage_rollup",
        sa.Column("agent", sa.String(length=128), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("executions", counter, nullable=False),
        sa.Column("input_tokens", counter, nullable=False),
        sa.Column("output_tokens", counter, nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("agent", "tenant", "hour", name=op.f("pk_usage_rollup")),
    )
    for table, column in AGE_INDEXES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(batch_op.f(f"ix_{table}_{column}"), [column], unique=False)


def downgrade() -> None:
    for table, column in AGE_INDEXES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_{column}"))
    op.drop_table("usage_rollup")
