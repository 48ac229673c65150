"""Mail sent for an organization: the addresses that unsubscribed from it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from nectar.schema.access import access_of, secure_table_sql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    suppressions = op.create_table(
        "email_suppressions",
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("address", postgresql.CITEXT(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_email_suppressions_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "address", name=op.f("pk_email_suppressions")),
        info={"service": "core", "tenant_column": "org_id"},
    )
    for statement in secure_table_sql(suppressions.name, access_of(suppressions)):
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("email_suppressions")
