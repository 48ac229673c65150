"""Accounts: browser sessions, rate-limit counters, provisioning references, member policies

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from nectar.schema.access import access_of, secure_table_sql, user_membership_policies_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    buckets = op.create_table(
        "rate_limit_buckets",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "window_start", name=op.f("pk_rate_limit_buckets")),
        info={"service": "core", "writers": ["marketing"]},
    )
    sessions = op.create_table(
        "user_sessions",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("address", postgresql.INET(), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column(
            "last_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_sessions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_sessions")),
        info={"service": "core"},
    )
    op.create_index("ix_user_sessions_user_id", "user_sessions", ["user_id"], unique=False)
    op.add_column("organizations", sa.Column("external_ref", sa.String(length=255), nullable=True))
    op.create_unique_constraint(op.f("uq_organizations_external_ref"), "organizations", ["external_ref"])
    for table in (buckets, sessions):
        for statement in secure_table_sql(table.name, access_of(table)):
            op.execute(statement)
    for statement in user_membership_policies_sql():
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP POLICY member_of ON organizations")
    op.execute("DROP POLICY member_self ON memberships")
    op.drop_constraint(op.f("uq_organizations_external_ref"), "organizations", type_="unique")
    op.drop_column("organizations", "external_ref")
    op.drop_index("ix_user_sessions_user_id", table_name="user_sessions")
    op.drop_table("user_sessions")
    op.drop_table("rate_limit_buckets")
