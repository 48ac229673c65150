"""Core: what each organization used, per UTC day, as its runs end (counted by the database itself:
migration 0021's triggers on workflow_runs, so it always agrees with the runs it counts)."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import BigInteger, Date, ForeignKey, SmallInteger, String
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from nectar.schema.models.columns import tenant_table
from nectar.shared.database import Base

# Rows one organization's day is spread over: runs ending at once in several workers add to
# different rows (by database session), so none waits for another's commit. Readers sum them.
USAGE_SHARDS = 16


class UsageDay(Base):
    """The runs of an organization that ended on `day` (UTC) and were started by `trigger`
    ("http" runs are endpoint calls), with the steps they executed, the outbound HTTP requests
    among them, and their time. Tests of drafts are not counted. Kept when runs are pruned.
    Marketing reads every organization's (it reports paid plans' usage to Stripe)."""

    __tablename__ = "usage_daily"
    __table_args__ = (tenant_table(readers=["marketing"]),)  # marketing reports it to Stripe

    org_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(20), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    runs: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    steps: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    http_calls: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    run_ms: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
