"""Checkpoints keep their outputs' key order: json, not jsonb (which sorts keys), so a replay reads an
output's keys in the order the step first saw them (a loop over an answer's keys repeats nothing).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_COLUMNS = ("output", "record")


def upgrade() -> None:
    for column in _COLUMNS:
        op.execute(
            f"ALTER TABLE workflow_run_checkpoints ALTER COLUMN {column} TYPE json USING {column}::json"
        )


def downgrade() -> None:
    for column in _COLUMNS:
        op.execute(
            f"ALTER TABLE workflow_run_checkpoints ALTER COLUMN {column} TYPE jsonb USING {column}::jsonb"
        )
