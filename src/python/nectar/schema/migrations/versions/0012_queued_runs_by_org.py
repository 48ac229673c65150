"""An index of each organization's queued runs, so queueing a run can count those already waiting.

Core gives an organization's Nth waiting run a lower priority than every other organization's
first (core/runs/jobs.py), so one organization's thousand queued runs never starve another's.
Endpoint calls' runs are written finished and never enter this index.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

INDEX = "ix_workflow_runs_org_id_queued"


def upgrade() -> None:
    op.create_index(INDEX, "workflow_runs", ["org_id"], postgresql_where=sa.text("status = 'queued'"))


def downgrade() -> None:
    op.drop_index(INDEX, "workflow_runs")
