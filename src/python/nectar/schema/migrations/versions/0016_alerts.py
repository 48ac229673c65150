"""Alert rules: whom to tell when an organization's runs fail, and the index that counts failures.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from nectar.schema.access import access_of, secure_table_sql

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    rules = op.create_table(
        "alert_rules",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("workflow_id", sa.UUID(), nullable=True),
        sa.Column("threshold", sa.Integer(), server_default="1", nullable=False),
        sa.Column("window_minutes", sa.Integer(), server_default="60", nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("target", sa.String(length=2000), nullable=False),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("key_id", sa.String(length=40), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("last_fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "channel IN ('email', 'slack', 'webhook', 'workflow')", name=op.f("ck_alert_rules_channel")
        ),
        sa.CheckConstraint("threshold >= 1", name=op.f("ck_alert_rules_threshold")),
        sa.CheckConstraint("window_minutes BETWEEN 1 AND 10080", name=op.f("ck_alert_rules_window_minutes")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_alert_rules_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "workflow_id"],
            ["workflows.org_id", "workflows.id"],
            name=op.f("fk_alert_rules_org_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_alert_rules_created_by_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_rules")),
        sa.UniqueConstraint("org_id", "id", name="uq_alert_rules_org_id_id"),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_alert_rules_org_id_name")),
        info={"service": "core", "tenant_column": "org_id"},
    )
    for statement in secure_table_sql(rules.name, access_of(rules)):
        op.execute(statement)
    op.create_index(
        "ix_workflow_runs_failed",
        "workflow_runs",
        ["org_id", "finished_at"],
        unique=False,
        postgresql_where=sa.text("status = 'failed'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_workflow_runs_failed", table_name="workflow_runs", postgresql_where=sa.text("status = 'failed'")
    )
    op.drop_table("alert_rules")
