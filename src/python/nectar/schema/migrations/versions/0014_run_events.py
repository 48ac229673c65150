"""Events and approvals for durable runs: events sent to a run, kept until a wait_for_event step
takes them, and the decisions approval steps wait for.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from nectar.schema.access import access_of, secure_table_sql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    events = op.create_table(
        "workflow_run_events",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("step_key", sa.String(length=500), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("taken_by", sa.String(length=500), nullable=True),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("source IN ('api', 'resume_url')", name=op.f("ck_workflow_run_events_source")),
        sa.ForeignKeyConstraint(
            ["org_id", "run_id"],
            ["workflow_runs.org_id", "workflow_runs.id"],
            name=op.f("fk_workflow_run_events_org_id_workflow_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_run_events")),
        sa.UniqueConstraint("org_id", "id", name="uq_workflow_run_events_org_id_id"),
        info={"service": "core", "tenant_column": "org_id"},
    )
    op.create_index(
        "ix_workflow_run_events_untaken",
        "workflow_run_events",
        ["org_id", "run_id", "name", "received_at"],
        unique=False,
        postgresql_where=sa.text("taken_by IS NULL"),
    )
    approvals = op.create_table(
        "workflow_approvals",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("step_key", sa.String(length=500), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("approver_role", sa.String(length=20), nullable=False),
        sa.Column(
            "requested_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision", sa.String(length=20), nullable=True),
        sa.Column("decided_by", sa.UUID(), nullable=True),
        sa.Column("decided_by_email", sa.String(length=320), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "approver_role IN ('member', 'admin', 'owner')", name=op.f("ck_workflow_approvals_approver_role")
        ),
        sa.CheckConstraint(
            "decision IN ('approved', 'rejected')", name=op.f("ck_workflow_approvals_decision")
        ),
        sa.ForeignKeyConstraint(
            ["decided_by"],
            ["users.id"],
            name=op.f("fk_workflow_approvals_decided_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "run_id"],
            ["workflow_runs.org_id", "workflow_runs.id"],
            name=op.f("fk_workflow_approvals_org_id_workflow_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_approvals")),
        sa.UniqueConstraint("org_id", "id", name="uq_workflow_approvals_org_id_id"),
        sa.UniqueConstraint(
            "org_id", "run_id", "step_key", name=op.f("uq_workflow_approvals_org_id_run_id_step_key")
        ),
        info={"service": "core", "tenant_column": "org_id"},
    )
    op.create_index(
        "ix_workflow_approvals_org_id_requested_at",
        "workflow_approvals",
        ["org_id", "requested_at"],
        unique=False,
    )
    for table in (events, approvals):
        for statement in secure_table_sql(table.name, access_of(table)):
            op.execute(statement)


def downgrade() -> None:
    op.drop_table("workflow_approvals")
    op.drop_table("workflow_run_events")
