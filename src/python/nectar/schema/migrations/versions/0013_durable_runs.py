"""Durable runs: a run may wait (until a time, or until woken), and keeps a journal of the steps
that acted on the world, so any worker can resume it after a crash without repeating them.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from nectar.schema.access import access_of, secure_table_sql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

OLD_STATUSES = "('queued', 'running', 'succeeded', 'failed', 'cancelled')"
NEW_STATUSES = "('queued', 'running', 'waiting', 'succeeded', 'failed', 'cancelled')"


def upgrade() -> None:
    op.add_column("workflow_runs", sa.Column("wake_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "workflow_runs", sa.Column("waiting_for", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )
    op.drop_constraint(op.f("ck_workflow_runs_status"), "workflow_runs", type_="check")
    op.create_check_constraint(op.f("ck_workflow_runs_status"), "workflow_runs", f"status IN {NEW_STATUSES}")
    checkpoints = op.create_table(
        "workflow_run_checkpoints",
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("step_key", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("output", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("record", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("saved_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('succeeded', 'failed', 'waiting')", name=op.f("ck_workflow_run_checkpoints_status")
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "run_id"],
            ["workflow_runs.org_id", "workflow_runs.id"],
            name=op.f("fk_workflow_run_checkpoints_org_id_workflow_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "run_id", "step_key", name=op.f("pk_workflow_run_checkpoints")),
        info={"service": "core", "tenant_column": "org_id"},
    )
    for statement in secure_table_sql(checkpoints.name, access_of(checkpoints)):
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("workflow_run_checkpoints")
    op.execute("UPDATE workflow_runs SET status = 'failed' WHERE status = 'waiting'")
    op.drop_constraint(op.f("ck_workflow_runs_status"), "workflow_runs", type_="check")
    op.create_check_constraint(op.f("ck_workflow_runs_status"), "workflow_runs", f"status IN {OLD_STATUSES}")
    op.drop_column("workflow_runs", "waiting_for")
    op.drop_column("workflow_runs", "wake_at")
