"""Indexes for admin's sweep of runs whose next activation was lost (core/contract/runs.py): waiting
runs by wake time, queued and running ones by queue time, and the jobs still to do by run; and an
organization's runs not ended by status (replacing its queued ones), counted against its limits.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_workflow_runs_org_id_queued", table_name="workflow_runs")
    op.create_index(
        "ix_workflow_runs_org_id_unfinished",
        "workflow_runs",
        ["org_id", "status"],
        postgresql_where=sa.text("status IN ('queued', 'running', 'waiting')"),
    )
    op.create_index(
        "ix_workflow_runs_waiting_wake_at",
        "workflow_runs",
        ["wake_at"],
        postgresql_where=sa.text("status = 'waiting'"),
    )
    op.create_index(
        "ix_workflow_runs_going_queued_at",
        "workflow_runs",
        ["queued_at"],
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )
    # procrastinate's own table: only the jobs still to do (few), by the run they are for.
    op.execute(
        "CREATE INDEX ix_procrastinate_jobs_pending_run_id ON procrastinate_jobs ((args->>'run_id')) "
        "WHERE status IN ('todo', 'doing')"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_procrastinate_jobs_pending_run_id")
    op.drop_index("ix_workflow_runs_going_queued_at", table_name="workflow_runs")
    op.drop_index("ix_workflow_runs_waiting_wake_at", table_name="workflow_runs")
    op.drop_index("ix_workflow_runs_org_id_unfinished", table_name="workflow_runs")
    op.create_index(
        "ix_workflow_runs_org_id_queued",
        "workflow_runs",
        ["org_id"],
        postgresql_where=sa.text("status = 'queued'"),
    )
