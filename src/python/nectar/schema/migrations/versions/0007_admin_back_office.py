"""Admin: staff sessions and the back-office.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from nectar.schema.access import access_of, secure_table_sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    sessions = op.create_table(
        "staff_sessions",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("staff_id", sa.UUID(), nullable=False),
        sa.Column("address", postgresql.INET(), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column(
            "last_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("totp_verified", sa.Boolean(), server_default="false", nullable=False),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["staff_users.id"],
            name=op.f("fk_staff_sessions_staff_id_staff_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_sessions")),
        info={"service": "admin"},
    )
    op.create_index("ix_staff_sessions_staff_id", "staff_sessions", ["staff_id"], unique=False)
    for statement in secure_table_sql(sessions.name, access_of(sessions)):
        op.execute(statement)
    op.add_column("staff_users", sa.Column("totp_last_step", sa.BigInteger(), nullable=True))
    # Admin's users list on large tables: newest first, and substring search on email and name.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_index("ix_users_created_at", "users", ["created_at"], unique=False)
    op.create_index(
        "ix_users_email_trgm",
        "users",
        [sa.cast(sa.column("email"), sa.Text).label("email_text")],
        postgresql_using="gin",
        postgresql_ops={"email_text": "gin_trgm_ops"},
    )
    op.create_index(
        "ix_users_display_name_trgm",
        "users",
        ["display_name"],
        postgresql_using="gin",
        postgresql_ops={"display_name": "gin_trgm_ops"},
    )
    # The same for admin's leads list: search on email, name and company.
    op.create_index(
        "ix_leads_email_trgm",
        "leads",
        [sa.cast(sa.column("email"), sa.Text).label("email_text")],
        postgresql_using="gin",
        postgresql_ops={"email_text": "gin_trgm_ops"},
    )
    for name in ("name", "company"):
        op.create_index(
            f"ix_leads_{name}_trgm",
            "leads",
            [name],
            postgresql_using="gin",
            postgresql_ops={name: "gin_trgm_ops"},
        )
    # The users list sorted by name or last sign-in, empty values last either way: one index per
    # direction, id breaking ties.
    for name in ("display_name", "last_login_at"):
        op.create_index(f"ix_users_{name}_id", "users", [name, "id"], unique=False)
        op.create_index(
            f"ix_users_{name}_desc_id",
            "users",
            [sa.desc(sa.column(name)).nulls_last(), sa.desc(sa.column("id"))],
            unique=False,
        )
    # The dashboard's totals, each counted from an index: inactive users, suspended organizations,
    # and runs per day across every organization.
    op.create_index("ix_users_inactive", "users", ["id"], postgresql_where=sa.text("NOT is_active"))
    op.create_index(
        "ix_organizations_suspended",
        "organizations",
        ["id"],
        postgresql_where=sa.text("status = 'suspended'"),
    )
    op.create_index("ix_workflow_runs_queued_at", "workflow_runs", ["queued_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_workflow_runs_queued_at", table_name="workflow_runs")
    op.drop_index("ix_organizations_suspended", table_name="organizations")
    op.drop_index("ix_users_inactive", table_name="users")
    for name in ("display_name", "last_login_at"):
        op.drop_index(f"ix_users_{name}_desc_id", table_name="users")
        op.drop_index(f"ix_users_{name}_id", table_name="users")
    for name in ("company", "name", "email"):
        op.drop_index(f"ix_leads_{name}_trgm", table_name="leads")
    op.drop_index("ix_users_display_name_trgm", table_name="users")
    op.drop_index("ix_users_email_trgm", table_name="users")
    op.drop_index("ix_users_created_at", table_name="users")
    op.execute("DROP EXTENSION IF EXISTS pg_trgm")
    op.drop_column("staff_users", "totp_last_step")
    op.drop_index("ix_staff_sessions_staff_id", table_name="staff_sessions")
    op.drop_table("staff_sessions")
