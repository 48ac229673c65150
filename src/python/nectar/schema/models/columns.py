"""Column and constraint shapes the models repeat."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, ForeignKeyConstraint, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column


def uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()"))


def created_timestamp() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


def updated_timestamp() -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


def timestamp(*, nullable: bool = True) -> Mapped[datetime | None]:
    return mapped_column(DateTime(timezone=True), nullable=nullable)


def org_id() -> Mapped[uuid.UUID]:
    return mapped_column(
        UUID(as_uuid=True), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )


def tenant_key(table: str) -> UniqueConstraint:
    """UNIQUE (org_id, id): the index every tenant table leads with org_id, and the target of
    same-tenant foreign keys."""
    return UniqueConstraint("org_id", "id", name=f"uq_{table}_org_id_id")


def same_tenant(column: str, parent: str, *, ondelete: str = "CASCADE") -> ForeignKeyConstraint:
    """A reference that must stay inside one organization. Foreign-key checks ignore row-level
    security, so a plain key would let org A point at org B's row; (org_id, x_id) cannot."""
    return ForeignKeyConstraint(["org_id", column], [f"{parent}.org_id", f"{parent}.id"], ondelete=ondelete)


def tenant_table(service: str = "core", **extra) -> dict:
    return {"info": {"service": service, "tenant_column": "org_id", **extra}}


def max_length(column) -> int:
    """The length limit of a String column (`Model.attribute`): what a form checks before storing a
    value in it and tells the browser (maxlength), read from the one declaration."""
    return column.type.length
