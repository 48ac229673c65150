"""Core: an organization's variables (plain text, `vars.NAME` in workflows) and secrets (encrypted,
`secrets.NAME`; never shown again once set)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, LargeBinary, String, Text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from nectar.schema.models.columns import created_timestamp, tenant_table, updated_timestamp
from nectar.shared.database import Base

# The names both may have: upper case, digits and underscores, as environment variables are named,
# so they read apart from a run's own `set` values (lower case by custom) and never need quoting.
NAME_PATTERN = "^[A-Z_][A-Z0-9_]{0,63}$"
MAX_VARIABLE_CHARS = 4096
MAX_SECRET_CHARS = 8192


def _org_key() -> Mapped[uuid.UUID]:
    # PRIMARY KEY (org_id, name): the organization leads, as a table distributed by org_id needs.
    return mapped_column(
        UUID(as_uuid=True), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )


class OrganizationVariable(Base):
    __tablename__ = "organization_variables"
    __table_args__ = (
        CheckConstraint(f"name ~ '{NAME_PATTERN}'", name="name"),
        CheckConstraint(f"char_length(value) <= {MAX_VARIABLE_CHARS}", name="value"),
        tenant_table(),
    )

    org_id: Mapped[uuid.UUID] = _org_key()
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = created_timestamp()
    updated_at: Mapped[datetime] = updated_timestamp()


class OrganizationSecret(Base):
    __tablename__ = "organization_secrets"
    __table_args__ = (
        CheckConstraint(f"name ~ '{NAME_PATTERN}'", name="name"),
        tenant_table(),
    )

    org_id: Mapped[uuid.UUID] = _org_key()
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Encrypted at rest (Fernet under NECTAR_ENCRYPTION_KEYS); key_id names the key, for rotation.
    value_ciphertext: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    key_id: Mapped[str] = mapped_column(String(40), nullable=False)
    created_at: Mapped[datetime] = created_timestamp()
    updated_at: Mapped[datetime] = updated_timestamp()
