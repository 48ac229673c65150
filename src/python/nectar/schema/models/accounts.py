"""Core: organizations (the tenants), user accounts, memberships, invitations and API keys."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    cast,
    column,
    desc,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, CITEXT, INET, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from nectar.schema.models.columns import (
    IDENTIFIED_BY_ID,
    created_timestamp,
    global_table,
    org_id,
    tenant_key,
    tenant_row_id,
    tenant_table,
    timestamp,
    updated_timestamp,
    uuid_pk,
)
from nectar.shared.database import Base

MEMBER_ROLES = ("owner", "admin", "member")


class Organization(Base):
    __tablename__ = "organizations"
    # The tenant root: its own id is what row-level security compares.
    __table_args__ = (
        CheckConstraint("status IN ('active', 'suspended')", name="status"),
        # Admin's dashboard counts the suspended ones from this small index.
        Index("ix_organizations_suspended", "id", postgresql_where=text("status = 'suspended'")),
        global_table(
            "core",
            tenant_column="id",
            platform_reason="the tenant root, one small row per organization: global tables refer to "
            "it (users.last_org_id, subscriptions), which Citus allows only towards a reference "
            "table, and its slug is unique across organizations",
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    slug: Mapped[str] = mapped_column(String(63), nullable=False, unique=True)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, server_default="UTC")
    plan: Mapped[str] = mapped_column(String(40), nullable=False, server_default="free")
    # Staff's raises of the plan's limits and features for this organization
    # (nectar.core.contract.plans.entitlements reads them; admin's organization page sets them).
    plan_overrides: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="active")
    suspended_reason: Mapped[str | None] = mapped_column(Text)
    # Set when another service provisions the organization (e.g. a Stripe checkout session id), so a
    # retried provisioning request finds the organization it already made.
    external_ref: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = created_timestamp()
    updated_at: Mapped[datetime] = updated_timestamp()


class User(Base):
    __tablename__ = "users"
    # A person's login, global across organizations (what they may see is decided by memberships).
    __table_args__ = (
        # For admin's users list on large tables: newest first, and substring search (pg_trgm) on
        # email and name, without reading every row.
        Index("ix_users_created_at", "created_at"),
        Index(
            "ix_users_email_trgm",
            cast(column("email"), Text).label("email_text"),
            postgresql_using="gin",
            postgresql_ops={"email_text": "gin_trgm_ops"},
        ),
        Index(
            "ix_users_display_name_trgm",
            "display_name",
            postgresql_using="gin",
            postgresql_ops={"display_name": "gin_trgm_ops"},
        ),
        # Its sorts by name and by last sign-in, empty values last either way: one index per
        # direction (a backward scan would put the empty ones first), id breaking ties.
        Index("ix_users_display_name_id", "display_name", "id"),
        Index("ix_users_display_name_desc_id", desc(column("display_name")).nulls_last(), desc(column("id"))),
        Index("ix_users_last_login_at_id", "last_login_at", "id"),
        Index(
            "ix_users_last_login_at_desc_id", desc(column("last_login_at")).nulls_last(), desc(column("id"))
        ),
        # The dashboard's active users: all (any index) minus these few, each counted from an index.
        Index("ix_users_inactive", "id", postgresql_where=text("NOT is_active")),
        # An organization deleted clears it from its users without reading every user.
        Index("ix_users_last_org_id", "last_org_id", postgresql_where=text("last_org_id IS NOT NULL")),
        global_table(
            "core",
            platform_reason="a person's login, one across every organization they belong to; "
            "last_org_id only remembers where they were last",
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    email: Mapped[str] = mapped_column(CITEXT, nullable=False, unique=True)
    password_hash: Mapped[str | None] = mapped_column(Text)
    display_name: Mapped[str | None] = mapped_column(String(200))
    email_verified_at: Mapped[datetime | None] = timestamp()
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="true")
    last_login_at: Mapped[datetime | None] = timestamp()
    # The organization they opened last, where signing in takes them (kept across sign-outs).
    last_org_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("organizations.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = created_timestamp()
    updated_at: Mapped[datetime] = updated_timestamp()


class UserSession(Base):
    __tablename__ = "user_sessions"
    # One row per signed-in browser: the cookie names the row, and signing out revokes it.
    __table_args__ = (Index("ix_user_sessions_user_id", "user_id"), global_table("core"))

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    address: Mapped[str | None] = mapped_column(INET)
    user_agent: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = created_timestamp()
    last_seen_at: Mapped[datetime] = created_timestamp()
    revoked_at: Mapped[datetime | None] = timestamp()


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (
        CheckConstraint(f"role IN {MEMBER_ROLES}", name="role"),
        Index("ix_memberships_user_id", "user_id"),
        tenant_table(),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(20), nullable=False)
    created_at: Mapped[datetime] = created_timestamp()


class Invitation(Base):
    __tablename__ = "invitations"
    __table_args__ = (
        tenant_key("invitations"),
        CheckConstraint(f"role IN {MEMBER_ROLES}", name="role"),
        Index("ix_invitations_org_id_email", "org_id", "email"),
        tenant_table(),
    )

    __mapper_args__ = IDENTIFIED_BY_ID

    id: Mapped[uuid.UUID] = tenant_row_id()
    org_id: Mapped[uuid.UUID] = org_id()
    email: Mapped[str] = mapped_column(CITEXT, nullable=False)
    role: Mapped[str] = mapped_column(String(20), nullable=False)
    invited_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="SET NULL")
    )
    expires_at: Mapped[datetime] = timestamp(nullable=False)
    accepted_at: Mapped[datetime | None] = timestamp()
    revoked_at: Mapped[datetime | None] = timestamp()
    created_at: Mapped[datetime] = created_timestamp()


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        tenant_key("api_keys"),
        CheckConstraint("cardinality(scopes) > 0", name="scopes"),
        # The token names its organization, so a key is looked up within it.
        UniqueConstraint("org_id", "key_hash"),
        tenant_table(),
    )

    __mapper_args__ = IDENTIFIED_BY_ID

    id: Mapped[uuid.UUID] = tenant_row_id()
    org_id: Mapped[uuid.UUID] = org_id()
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    # Shown in lists so people can tell keys apart; the secret itself is stored only as a hash.
    prefix: Mapped[str] = mapped_column(String(24), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(128), nullable=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = created_timestamp()
    last_used_at: Mapped[datetime | None] = timestamp()
    revoked_at: Mapped[datetime | None] = timestamp()
    # What the key may do (nectar.core.api_keys.service.Scope); keys older than scopes hold admin.
    scopes: Mapped[list[str]] = mapped_column(
        ARRAY(String(32)), nullable=False, server_default=text("'{admin}'::varchar[]")
    )
    expires_at: Mapped[datetime | None] = timestamp()  # None: it never expires


class EmailSuppression(Base):
    __tablename__ = "email_suppressions"
    # An address that unsubscribed from the mail an organization sends through us (its workflows'
    # email and its invitations): none is queued to it any more.
    __table_args__ = (tenant_table(),)

    org_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    address: Mapped[str] = mapped_column(CITEXT, primary_key=True)
    created_at: Mapped[datetime] = created_timestamp()
