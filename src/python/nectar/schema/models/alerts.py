"""Core: an organization's alert rules, which say whom to tell when its workflows' runs fail."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from nectar.schema.models.columns import (
    IDENTIFIED_BY_ID,
    created_timestamp,
    org_id,
    same_tenant,
    tenant_key,
    tenant_row_id,
    tenant_table,
    timestamp,
)
from nectar.shared.database import Base

ALERT_CHANNELS = ("email", "slack", "webhook", "workflow")
MAX_WINDOW_MINUTES = 7 * 24 * 60


class AlertRule(Base):
    """When `threshold` runs of a workflow (any, without `workflow_id`) fail within `window_minutes`,
    tell `target` through `channel`; at most once per window (`last_fired_at`)."""

    __tablename__ = "alert_rules"
    __table_args__ = (
        tenant_key("alert_rules"),
        UniqueConstraint("org_id", "name"),
        same_tenant("workflow_id", "workflows"),
        CheckConstraint(f"channel IN {ALERT_CHANNELS}", name="channel"),
        CheckConstraint("threshold >= 1", name="threshold"),
        CheckConstraint(f"window_minutes BETWEEN 1 AND {MAX_WINDOW_MINUTES}", name="window_minutes"),
        tenant_table(),
    )

    __mapper_args__ = IDENTIFIED_BY_ID

    id: Mapped[uuid.UUID] = tenant_row_id()
    org_id: Mapped[uuid.UUID] = org_id()
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    workflow_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))  # NULL: any workflow
    threshold: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    window_minutes: Mapped[int] = mapped_column(Integer, nullable=False, server_default="60")
    channel: Mapped[str] = mapped_column(String(20), nullable=False)
    # An email address, a Slack connection's name, a URL, or a workflow's id, by channel.
    target: Mapped[str] = mapped_column(String(2000), nullable=False)
    # A webhook's signing secret, encrypted like connections' credentials; key_id names the key.
    secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    key_id: Mapped[str | None] = mapped_column(String(40))
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="true")
    last_fired_at: Mapped[datetime | None] = timestamp()
    last_delivered_at: Mapped[datetime | None] = timestamp()
    last_error: Mapped[str | None] = mapped_column(Text)  # of the last delivery, until one succeeds
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = created_timestamp()
