"""Billing: what the subscription mirror needs to provision organizations and follow payments.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = (
    sa.Column("checkout_session_id", sa.String(length=255), nullable=True),
    sa.Column("organization_name", sa.String(length=200), nullable=True),
    sa.Column("provisioning_status", sa.String(length=20), server_default="none", nullable=False),
    sa.Column("provisioning_attempts", sa.Integer(), server_default="0", nullable=False),
    sa.Column("provisioning_error", sa.Text(), nullable=True),
    sa.Column("provisioned_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("core_plan", sa.String(length=40), nullable=True),
    sa.Column("last_paid_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_payment_failed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("interval_count", sa.Integer(), server_default="1", nullable=False),
)


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("subscriptions", column)
    op.create_unique_constraint(
        op.f("uq_subscriptions_checkout_session_id"), "subscriptions", ["checkout_session_id"]
    )
    op.create_check_constraint(
        op.f("ck_subscriptions_provisioning_status"),
        "subscriptions",
        "provisioning_status IN ('none', 'pending', 'provisioned', 'refused')",
    )
    op.create_check_constraint(
        op.f("ck_subscriptions_interval_count"), "subscriptions", "interval_count >= 1"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_subscriptions_interval_count"), "subscriptions", type_="check")
    op.drop_constraint(op.f("ck_subscriptions_provisioning_status"), "subscriptions", type_="check")
    op.drop_constraint(op.f("uq_subscriptions_checkout_session_id"), "subscriptions", type_="unique")
    for column in reversed(COLUMNS):
        op.drop_column("subscriptions", column.name)
