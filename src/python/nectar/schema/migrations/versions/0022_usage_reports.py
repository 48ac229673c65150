"""Usage reported to Stripe's meters: marketing reads every organization's usage_daily, and keeps
usage_reports, one row per organization, day and meter, so a day is never billed twice.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from nectar.schema.access import access_of, secure_table_sql

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("GRANT SELECT ON TABLE usage_daily TO nectar_marketing")
    op.execute("CREATE POLICY marketing_reads ON usage_daily FOR SELECT TO nectar_marketing USING (true)")
    reports = op.create_table(
        "usage_reports",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("organization_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("meter", sa.String(length=100), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("identifier", sa.String(length=100), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=False),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("status IN ('reported', 'refused')", name=op.f("ck_usage_reports_status")),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_usage_reports_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_reports")),
        sa.UniqueConstraint("identifier", name=op.f("uq_usage_reports_identifier")),
        sa.UniqueConstraint(
            "organization_id", "day", "meter", name=op.f("uq_usage_reports_organization_id_day_meter")
        ),
        info={"service": "marketing"},
    )
    for statement in secure_table_sql(reports.name, access_of(reports)):
        op.execute(statement)
    op.create_index(
        "ix_usage_reports_refused", "usage_reports", ["day"], postgresql_where=sa.text("status = 'refused'")
    )


def downgrade() -> None:
    op.drop_table("usage_reports")
    op.execute("DROP POLICY marketing_reads ON usage_daily")
    op.execute("REVOKE SELECT ON TABLE usage_daily FROM nectar_marketing")
