"""Marketing: leads and their inquiries, the newsletter, campaigns, templates, blog posts and the
email outbox every service writes to."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text, cast, column
from sqlalchemy.dialects.postgresql import CITEXT, INET, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from nectar.schema.models.columns import (
    created_timestamp,
    global_table,
    timestamp,
    updated_timestamp,
    uuid_pk,
)
from nectar.shared.database import Base

LEAD_STAGES = ("new", "contacted", "qualified", "won", "lost")


class Lead(Base):
    __tablename__ = "leads"
    __table_args__ = (
        CheckConstraint(f"status IN {LEAD_STAGES}", name="status"),
        Index("ix_leads_created_at", "created_at"),
        Index("ix_leads_status_created_at", "status", "created_at"),
        # Admin's substring search over a million leads (pg_trgm), one index per searched column.
        Index(
            "ix_leads_email_trgm",
            cast(column("email"), Text).label("email_text"),
            postgresql_using="gin",
            postgresql_ops={"email_text": "gin_trgm_ops"},
        ),
        Index("ix_leads_name_trgm", "name", postgresql_using="gin", postgresql_ops={"name": "gin_trgm_ops"}),
        Index(
            "ix_leads_company_trgm",
            "company",
            postgresql_using="gin",
            postgresql_ops={"company": "gin_trgm_ops"},
        ),
        global_table("marketing"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    email: Mapped[str] = mapped_column(CITEXT, nullable=False, unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    company: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="new")
    source: Mapped[str | None] = mapped_column(String(100))
    assigned_staff_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("staff_users.id", ondelete="SET NULL")
    )
    last_inquiry_at: Mapped[datetime | None] = timestamp()
    created_at: Mapped[datetime] = created_timestamp()
    updated_at: Mapped[datetime] = updated_timestamp()


class LeadInquiry(Base):
    __tablename__ = "lead_inquiries"
    __table_args__ = (Index("ix_lead_inquiries_lead_id", "lead_id"), global_table("marketing"))

    id: Mapped[uuid.UUID] = uuid_pk()
    lead_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("leads.id", ondelete="CASCADE"), nullable=False
    )
    message: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(100))
    utm: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default="{}")
    address: Mapped[str | None] = mapped_column(INET)
    user_agent: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = created_timestamp()


class LeadNote(Base):
    __tablename__ = "lead_notes"
    # Written by staff in admin about a marketing lead.
    __table_args__ = (Index("ix_lead_notes_lead_id", "lead_id"), global_table("admin"))

    id: Mapped[uuid.UUID] = uuid_pk()
    lead_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("leads.id", ondelete="CASCADE"), nullable=False
    )
    staff_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("staff_users.id", ondelete="SET NULL")
    )
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = created_timestamp()


class NewsletterSubscriber(Base):
    __tablename__ = "newsletter_subscribers"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'confirmed', 'unsubscribed')", name="status"),
        # Campaigns walk the confirmed subscribers in id order, a batch at a time.
        Index("ix_newsletter_subscribers_status_id", "status", "id"),
        global_table("marketing"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    email: Mapped[str] = mapped_column(CITEXT, nullable=False, unique=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="pending")
    source: Mapped[str | None] = mapped_column(String(100))
    confirmed_at: Mapped[datetime | None] = timestamp()
    unsubscribed_at: Mapped[datetime | None] = timestamp()
    created_at: Mapped[datetime] = created_timestamp()
    updated_at: Mapped[datetime] = updated_timestamp()


class EmailTemplate(Base):
    __tablename__ = "email_templates"
    __table_args__ = (global_table("marketing"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    key: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    subject: Mapped[str] = mapped_column(String(300), nullable=False)
    body_markdown: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = created_timestamp()
    updated_at: Mapped[datetime] = updated_timestamp()


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint("status IN ('draft', 'scheduled', 'sending', 'sent', 'cancelled')", name="status"),
        global_table("marketing"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    subject: Mapped[str] = mapped_column(String(300), nullable=False)
    template_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("email_templates.id", ondelete="SET NULL")
    )
    body_markdown: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="draft")
    scheduled_at: Mapped[datetime | None] = timestamp()
    started_at: Mapped[datetime | None] = timestamp()
    finished_at: Mapped[datetime | None] = timestamp()
    sent_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("staff_users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = created_timestamp()
    updated_at: Mapped[datetime] = updated_timestamp()


class BlogPost(Base):
    __tablename__ = "blog_posts"
    __table_args__ = (
        CheckConstraint("status IN ('draft', 'published')", name="status"),
        Index("ix_blog_posts_status_published_at", "status", "published_at"),
        global_table("marketing"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    slug: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    title: Mapped[str] = mapped_column(String(300), nullable=False)
    summary: Mapped[str | None] = mapped_column(String(500))
    body_markdown: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="draft")
    # A published post with a future date stays hidden until then.
    published_at: Mapped[datetime | None] = timestamp()
    author_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_timestamp()
    updated_at: Mapped[datetime] = updated_timestamp()


class EmailOutbox(Base):
    __tablename__ = "email_outbox"
    # Every service queues mail here; marketing's worker sends it. Core may only add messages.
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed')", name="status"),
        Index("ix_email_outbox_due", "next_attempt_at", postgresql_where="status = 'pending'"),
        Index("ix_email_outbox_status_created_at", "status", "created_at"),
        Index("ix_email_outbox_campaign_id", "campaign_id"),
        global_table("marketing", inserters=["core"]),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    to_address: Mapped[str] = mapped_column(String(320), nullable=False)
    subject: Mapped[str] = mapped_column(String(300), nullable=False)
    body_text: Mapped[str] = mapped_column(Text, nullable=False)
    body_html: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default="{}")
    category: Mapped[str] = mapped_column(String(40), nullable=False)
    # Set by the sender when a message must never be queued twice (e.g. one campaign, one address).
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("campaigns.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = created_timestamp()
    last_error: Mapped[str | None] = mapped_column(Text)
    # While 'sending': the procrastinate worker (procrastinate_workers.id) sending it, if a worker is.
    sending_worker: Mapped[int | None] = mapped_column(BigInteger)
    sent_at: Mapped[datetime | None] = timestamp()
    created_at: Mapped[datetime] = created_timestamp()
