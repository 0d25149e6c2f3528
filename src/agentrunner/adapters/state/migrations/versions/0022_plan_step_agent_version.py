"""The version of its agent each step of a plan run runs on, recorded when the plan is
made, so a step agent's file edited mid-run does not change the run; and a run's result
parsed, when its agent has an `output_schema` its synthesis followed.

Revision ID: 0022
Revises: 0019
Create Date: 2026-12-07 06:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("plan_steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_version", sa.Integer(), nullable=True))
    with op.batch_alter_table("plan_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("result_json", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("plan_runs", schema=None) as batch_op:
        batch_op.drop_column("result_json")
    with op.batch_alter_table("plan_steps", schema=None) as batch_op:
        batch_op.drop_column("agent_version")
