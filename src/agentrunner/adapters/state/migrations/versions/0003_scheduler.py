"""The scheduler: schedules gain start time, jitter and misfire grace;
fires are keyed by (schedule_id, scheduled_for) and note why a tick did not run;
executions record the schedule that created them.

`schedule_fires` had no writer before this revision, so it is recreated rather than
altered (SQLite cannot drop a unique column in place).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 21:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("schedule_id", sa.String(length=64), nullable=True))
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.add_column(sa.Column("start_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("jitter_seconds", sa.Float(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("misfire_grace_seconds", sa.Float(), nullable=False, server_default="60"))
    with op.batch_alter_table("schedule_fires", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_schedule_fires_schedule_id"))
    op.drop_table("schedule_fires")
    op.create_table(
        "schedule_fires",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("schedule_id", sa.String(length=64), nullable=False),
        sa.Column("agent", sa.String(length=128), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("execution_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["schedule_id"], ["schedules.id"], name=op.f("fk_schedule_fires_schedule_id_schedules"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_fires")),
        sa.UniqueConstraint("schedule_id", "scheduled_for", name="uq_schedule_fires_schedule_time"),
    )
    with op.batch_alter_table("schedule_fires", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_schedule_fires_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_schedule_fires_execution_id"), ["execution_id"], unique=False)


def downgrade() -> None:
    op.drop_table("schedule_fires")
    op.create_table(
        "schedule_fires",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("schedule_id", sa.String(length=64), nullable=False),
        sa.Column("fire_key", sa.String(length=200), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("execution_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["schedule_id"], ["schedules.id"], name=op.f("fk_schedule_fires_schedule_id_schedules"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_fires")),
        sa.UniqueConstraint("fire_key", name=op.f("uq_schedule_fires_fire_key")),
    )
    with op.batch_alter_table("schedule_fires", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_schedule_fires_schedule_id"), ["schedule_id"], unique=False)
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_column("misfire_grace_seconds")
        batch_op.drop_column("jitter_seconds")
        batch_op.drop_column("start_at")
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_column("schedule_id")
