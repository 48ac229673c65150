"""Admin: staff accounts, the append-only audit log, and system settings."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    String,
    Text,
)
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

STAFF_ROLES = ("superadmin", "support", "read_only")


class StaffUser(Base):
    __tablename__ = "staff_users"
    __table_args__ = (CheckConstraint(f"role IN {STAFF_ROLES}", name="role"), global_table("admin"))

    id: Mapped[uuid.UUID] = uuid_pk()
    email: Mapped[str] = mapped_column(CITEXT, nullable=False, unique=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    role: Mapped[str] = mapped_column(String(20), nullable=False)
    totp_secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_enabled_at: Mapped[datetime | None] = timestamp()
    # The newest TOTP time step accepted: a code is good once, never replayed within its window.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="true")
    last_login_at: Mapped[datetime | None] = timestamp()
    created_at: Mapped[datetime] = created_timestamp()
    updated_at: Mapped[datetime] = updated_timestamp()


class StaffSession(Base):
    __tablename__ = "staff_sessions"
    # One row per signed-in staff browser: the admin cookie names the row; signing out revokes it.
    __table_args__ = (Index("ix_staff_sessions_staff_id", "staff_id"), global_table("admin"))

    id: Mapped[uuid.UUID] = uuid_pk()
    staff_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("staff_users.id", ondelete="CASCADE"), nullable=False
    )
    address: Mapped[str | None] = mapped_column(INET)
    user_agent: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = created_timestamp()
    last_seen_at: Mapped[datetime] = created_timestamp()
    revoked_at: Mapped[datetime | None] = timestamp()
    # The second factor was checked in this session (needed when the member has TOTP or is a superadmin).
    totp_verified: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_created_at", "created_at"),
        Index("ix_audit_log_target", "target"),
        global_table("admin", append_only=True),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    actor: Mapped[str] = mapped_column(String(320), nullable=False)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    action: Mapped[str] = mapped_column(String(100), nullable=False)
    target: Mapped[str | None] = mapped_column(String(200))
    before: Mapped[dict | None] = mapped_column(JSONB)
    after: Mapped[dict | None] = mapped_column(JSONB)
    address: Mapped[str | None] = mapped_column(INET)
    created_at: Mapped[datetime] = created_timestamp()


class SystemSetting(Base):
    __tablename__ = "system_settings"
    # Feature flags and plan limits: edited by staff, read by every service.
    __table_args__ = (global_table("admin", readers=["core", "marketing"]),)

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[dict] = mapped_column(JSONB, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("staff_users.id", ondelete="SET NULL")
    )
    updated_at: Mapped[datetime] = updated_timestamp()
