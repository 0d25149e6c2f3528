"""Collaborative runs: plan_runs, plan_steps and clarifications take the shape the
collaborative runtime writes (run version for optimistic saves, shared state, origin,
usage and cost; steps keyed by (run_id, step_id); clarification kinds, defaults and
expiry). The tables of 0001 had no writer, so they are recreated rather than altered.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 22:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _drop_old() -> None:
    with op.batch_alter_table("clarifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clarifications_plan_run_id"))
    op.drop_table("clarifications")
    with op.batch_alter_table("plan_steps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_plan_steps_plan_run_id"))
    op.drop_table("plan_steps")
    with op.batch_alter_table("plan_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_plan_runs_agent"))
    op.drop_table("plan_runs")


def upgrade() -> None:
    _drop_old()
    op.create_table(
        "plan_runs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("agent", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("task", sa.JSON(), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=True),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("origin", sa.JSON(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("trace_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_runs")),
    )
    with op.batch_alter_table("plan_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_plan_runs_agent"), ["agent"], unique=False)
        batch_op.create_index(batch_op.f("ix_plan_runs_status"), ["status"], unique=False)
    op.create_table(
        "plan_steps",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=False),
        sa.Column("agent", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("execution_id", sa.String(length=64), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["plan_runs.id"], name=op.f("fk_plan_steps_run_id_plan_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "step_id", name=op.f("pk_plan_steps")),
    )
    op.create_table(
        "clarifications",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("default", sa.Text(), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("answered_by", sa.String(length=256), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("asked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["plan_runs.id"], name=op.f("fk_clarifications_run_id_plan_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clarifications")),
    )
    with op.batch_alter_table("clarifications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_clarifications_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_clarifications_status"), ["status"], unique=False)


def downgrade() -> None:
    op.drop_table("clarifications")
    op.drop_table("plan_steps")
    op.drop_table("plan_runs")
    op.create_table(
        "plan_runs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("agent", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("trace_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_runs")),
    )
    with op.batch_alter_table("plan_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_plan_runs_agent"), ["agent"], unique=False)
    op.create_table(
        "plan_steps",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("plan_run_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("agent", sa.String(length=128), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("depends_on", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("execution_id", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["plan_run_id"], ["plan_runs.id"], name=op.f("fk_plan_steps_plan_run_id_plan_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_steps")),
        sa.UniqueConstraint("plan_run_id", "position", name="uq_plan_steps_run_position"),
    )
    with op.batch_alter_table("plan_steps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_plan_steps_plan_run_id"), ["plan_run_id"], unique=False)
    op.create_table(
        "clarifications",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("plan_run_id", sa.String(length=64), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=True),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("answered_by", sa.String(length=256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["plan_run_id"], ["plan_runs.id"], name=op.f("fk_clarifications_plan_run_id_plan_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["step_id"], ["plan_steps.id"], name=op.f("fk_clarifications_step_id_plan_steps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clarifications")),
    )
    with op.batch_alter_table("clarifications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_clarifications_plan_run_id"), ["plan_run_id"], unique=False)
