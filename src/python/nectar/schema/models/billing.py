"""Marketing: the mirror of Stripe subscriptions, every Stripe event received, and the usage
reported to Stripe's meters."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from nectar.schema.models.columns import (
    created_timestamp,
    global_table,
    timestamp,
    updated_timestamp,
    uuid_pk,
)
from nectar.shared.database import Base

# none: not from our checkout (made in Stripe's dashboard, say); pending: core has not answered yet;
# provisioned: the organization exists; refused: core said no (the reason is in provisioning_error).
PROVISIONING_STATES = ("none", "pending", "provisioned", "refused")


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint(f"provisioning_status IN {PROVISIONING_STATES}", name="provisioning_status"),
        CheckConstraint("interval_count >= 1", name="interval_count"),
        Index("ix_subscriptions_status", "status"),
        Index("ix_subscriptions_organization_id", "organization_id"),
        global_table(
            "marketing",
            platform_reason="a Stripe subscription exists before the organization it pays for "
            "(provisioning fills organization_id in), and marketing reads every one",
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    stripe_subscription_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    stripe_customer_id: Mapped[str] = mapped_column(String(255), nullable=False)
    # Which organization it pays for once provisioned: a reference, not a tenant key (marketing
    # sees every subscription).
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("organizations.id", ondelete="SET NULL")
    )
    lead_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("leads.id", ondelete="SET NULL")
    )
    customer_email: Mapped[str | None] = mapped_column(String(320))
    plan: Mapped[str] = mapped_column(String(40), nullable=False)
    status: Mapped[str] = mapped_column(String(40), nullable=False)
    stripe_price_id: Mapped[str | None] = mapped_column(String(255))
    quantity: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    # Price per billing interval in the smallest currency unit; MRR is derived from it and interval.
    unit_amount: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    currency: Mapped[str] = mapped_column(String(3), nullable=False, server_default="usd")
    interval: Mapped[str] = mapped_column(String(10), nullable=False, server_default="month")
    # Billed every `interval_count` intervals (Stripe's recurring.interval_count: 3 months = a quarter).
    interval_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    current_period_end: Mapped[datetime | None] = timestamp()
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    canceled_at: Mapped[datetime | None] = timestamp()
    # The `created` time of the newest Stripe event applied: older events arriving late are ignored.
    stripe_event_watermark: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    # The Checkout Session that created it, and the organization name given there (for provisioning).
    checkout_session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    organization_name: Mapped[str | None] = mapped_column(String(200))
    provisioning_status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="none")
    provisioning_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    provisioning_error: Mapped[str | None] = mapped_column(Text)
    provisioned_at: Mapped[datetime | None] = timestamp()
    # The plan core was last told for the organization; differs from the desired one until synced.
    core_plan: Mapped[str | None] = mapped_column(String(40))
    # Stripe `created` times of the newest paid and failed invoices: failing while the latter is newer.
    last_paid_at: Mapped[datetime | None] = timestamp()
    last_payment_failed_at: Mapped[datetime | None] = timestamp()
    created_at: Mapped[datetime] = created_timestamp()
    updated_at: Mapped[datetime] = updated_timestamp()


class StripeEvent(Base):
    __tablename__ = "stripe_events"
    __table_args__ = (
        Index("ix_stripe_events_pending", "received_at", postgresql_where="processed_at IS NULL"),
        global_table("marketing"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # Stripe's evt_... id
    type: Mapped[str] = mapped_column(String(100), nullable=False)
    payload: Mapped[dict] = mapped_column(JSONB, nullable=False)
    stripe_created: Mapped[int] = mapped_column(BigInteger, nullable=False)
    livemode: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    received_at: Mapped[datetime] = created_timestamp()
    processed_at: Mapped[datetime | None] = timestamp()
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)


USAGE_REPORT_STATES = ("reported", "refused")


class UsageReport(Base):
    """One organization's usage of one UTC day as reported to the payment provider's meter, once:
    `reported` (by `mode`: stripe, or the test checkout's stand-in, which only records it), or
    `refused` by the provider (why in `error`; staff see it on the billing page)."""

    __tablename__ = "usage_reports"
    __table_args__ = (
        UniqueConstraint("organization_id", "day", "meter"),
        CheckConstraint(f"status IN {USAGE_REPORT_STATES}", name="status"),
        Index("ix_usage_reports_refused", "day", postgresql_where="status = 'refused'"),
        global_table(
            "marketing",
            platform_reason="marketing's record of what it billed, for every organization at once; "
            "no organization reads it",
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    # A reference, not a tenant key: marketing bills every organization.
    organization_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    day: Mapped[date] = mapped_column(Date, nullable=False)
    meter: Mapped[str] = mapped_column(String(100), nullable=False)  # the meter's event name
    value: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # What the provider deduplicates on: the same organization, day and meter never bill twice.
    identifier: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    stripe_customer_id: Mapped[str] = mapped_column(String(255), nullable=False)
    mode: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    reported_at: Mapped[datetime] = created_timestamp()
