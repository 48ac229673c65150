"""Column and constraint shapes the models repeat."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, ForeignKeyConstraint, PrimaryKeyConstraint, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column


def uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()"))


def tenant_row_id() -> Mapped[uuid.UUID]:
    """The id of a tenant table's row: random, so unique in practice, but the key the database
    enforces is `tenant_key`'s (org_id, id)."""
    return mapped_column(UUID(as_uuid=True), nullable=False, server_default=text("gen_random_uuid()"))


# A tenant table's rows are still known to the ORM by id alone (`session.get(Model, id)`, the
# identity map), although the table's primary key is (org_id, id).
IDENTIFIED_BY_ID = {"primary_key": ["id"]}


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


def tenant_key(table: str) -> PrimaryKeyConstraint:
    """PRIMARY KEY (org_id, id): a key Citus can enforce on a table distributed by org_id (each
    key within one organization's shard), the index every tenant table leads with org_id, and the
    target of same-tenant foreign keys. Goes with `tenant_row_id()` and `IDENTIFIED_BY_ID`."""
    return PrimaryKeyConstraint("org_id", "id", name=f"pk_{table}")


def same_tenant(column: str, parent: str, *, ondelete: str = "CASCADE") -> ForeignKeyConstraint:
    """A reference that must stay inside one organization. Foreign-key checks ignore row-level
    security, so a plain key would let org A point at org B's row; (org_id, x_id) cannot."""
    return ForeignKeyConstraint(["org_id", column], [f"{parent}.org_id", f"{parent}.id"], ondelete=ondelete)


def tenant_table(service: str = "core", **extra) -> dict:
    """A tenant table: row-level security on org_id, and distributed by org_id on Citus."""
    return {"info": {"service": service, "tenant_column": "org_id", "citus": "distributed", **extra}}


def global_table(service: str, *, platform_reason: str | None = None, **extra) -> dict:
    """A table every organization shares: a reference table on Citus (a copy on every node).
    One that refers to organizations all the same gives `platform_reason`: why it is not a tenant
    table (the schema tests find every such table and ask for it)."""
    info = {"service": service, "citus": "reference", **extra}
    if platform_reason:
        info["platform_reason"] = platform_reason
    return {"info": info}


def max_length(column) -> int:
    """The length limit of a String column (`Model.attribute`): what a form checks before storing a
    value in it and tells the browser (maxlength), read from the one declaration."""
    return column.type.length
