"""Staff can raise a plan's limit or grant a feature for one organization: the overrides live on
the organization ({name: {value, reason, granted_by, granted_at}}), so core reads them with its
plan, and changing them notifies the route caches like any change to the organization (0008).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "organizations",
        sa.Column(
            "plan_overrides",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("organizations", "plan_overrides")
