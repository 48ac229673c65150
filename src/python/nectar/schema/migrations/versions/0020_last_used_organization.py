"""Users remember the organization they opened last, so signing in takes them back to it; the
organization going away forgets it (SET NULL), never the user.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("last_org_id", postgresql.UUID(as_uuid=True), nullable=True))
    op.create_foreign_key(
        op.f("fk_users_last_org_id_organizations"),
        "users",
        "organizations",
        ["last_org_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_index(
        "ix_users_last_org_id",
        "users",
        ["last_org_id"],
        postgresql_where=sa.text("last_org_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_users_last_org_id", table_name="users")
    op.drop_constraint(op.f("fk_users_last_org_id_organizations"), "users", type_="foreignkey")
    op.drop_column("users", "last_org_id")
