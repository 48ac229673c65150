"""A message being sent names the worker sending it (procrastinate's worker id), so that once that
worker's heartbeat stops, another one sends it within seconds instead of after the 15-minute lease
(a worker killed mid-send left its message unsent that long).

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("email_outbox", sa.Column("sending_worker", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("email_outbox", "sending_worker")
