"""API keys gain scopes and an optional expiry. Every key made before could do everything in its
organization, so each keeps that as the scope `admin`.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column(
            "scopes",
            postgresql.ARRAY(sa.String(length=32)),
            server_default=sa.text("'{admin}'::varchar[]"),
            nullable=False,
        ),
    )
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(op.f("ck_api_keys_scopes"), "api_keys", "cardinality(scopes) > 0")


def downgrade() -> None:
    op.drop_constraint(op.f("ck_api_keys_scopes"), "api_keys", type_="check")
    op.drop_column("api_keys", "expires_at")
    op.drop_column("api_keys", "scopes")
