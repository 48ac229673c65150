"""An organization's test runs of the last hour are counted when it starts another: testing a draft
is not usage, so it has a bound of its own (core/runs/queue.py, MAX_TEST_RUNS_PER_HOUR). The index
holds test runs only, so the count never reads an organization's other runs.

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_workflow_runs_tests",
        "workflow_runs",
        ["org_id", "queued_at"],
        postgresql_where=sa.text("trigger = 'test'"),
    )


def downgrade() -> None:
    op.drop_index("ix_workflow_runs_tests", table_name="workflow_runs")
