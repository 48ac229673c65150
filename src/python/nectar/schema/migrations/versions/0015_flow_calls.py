"""Runs that call other workflows: a called run keeps its caller and how deeply calls are nested.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workflow_runs", sa.Column("parent_run_id", sa.UUID(), nullable=True))
    op.add_column(
        "workflow_runs", sa.Column("call_depth", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )


def downgrade() -> None:
    op.drop_column("workflow_runs", "call_depth")
    op.drop_column("workflow_runs", "parent_run_id")
