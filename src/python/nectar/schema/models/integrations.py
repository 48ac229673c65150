"""Core: the catalog of connector templates, each organization's configured connections, and the
connectors it imported from OpenAPI documents."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB, UUID
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
)
from nectar.shared.database import Base


class CatalogService(Base):
    __tablename__ = "catalog_services"
    # Platform-wide connector templates (REST, webhook, SMTP, Slack...): the same for every tenant.
    __table_args__ = (global_table("core"),)

    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    # JSON Schemas of the connection's settings and of its secret credentials.
    config_schema: Mapped[dict] = mapped_column(JSONB, nullable=False)
    credentials_schema: Mapped[dict] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = created_timestamp()


class IntegrationConnection(Base):
    __tablename__ = "integration_connections"
    __table_args__ = (
        tenant_key("integration_connections"),
        UniqueConstraint("org_id", "name"),
        tenant_table(),
    )

    __mapper_args__ = IDENTIFIED_BY_ID

    id: Mapped[uuid.UUID] = tenant_row_id()
    org_id: Mapped[uuid.UUID] = org_id()
    service_key: Mapped[str] = mapped_column(String(40), ForeignKey("catalog_services.key"), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    config: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default="{}")
    # Encrypted at rest (Fernet under a key from the environment); key_id names the key, for rotation.
    credentials_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    key_id: Mapped[str | None] = mapped_column(String(40))
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="SET NULL")
    )
    last_tested_at: Mapped[datetime | None] = timestamp()
    last_test_ok: Mapped[bool | None] = mapped_column(Boolean)
    last_test_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_timestamp()
    updated_at: Mapped[datetime] = updated_timestamp()


class ImportedConnector(Base):
    """A third-party API described by an OpenAPI 3 document an organization imported: http_request
    steps call its operations by operationId; a connection of the `openapi` template signs them."""

    __tablename__ = "imported_connectors"
    __table_args__ = (
        tenant_key("imported_connectors"),
        UniqueConstraint("org_id", "name"),
        tenant_table(),
    )

    __mapper_args__ = IDENTIFIED_BY_ID

    id: Mapped[uuid.UUID] = tenant_row_id()
    org_id: Mapped[uuid.UUID] = org_id()
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    # servers[0] (or the one chosen at import), its variables substituted; calls go under it only.
    base_url: Mapped[str] = mapped_column(String(2000), nullable=False)
    # The document as imported, and what calls need of it, by operationId (openapi_import.py).
    document: Mapped[dict] = mapped_column(JSONB, nullable=False)
    operations: Mapped[dict] = mapped_column(JSONB, nullable=False)
    document_bytes: Mapped[int] = mapped_column(Integer, nullable=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = created_timestamp()
