"""Connectors imported from OpenAPI 3 documents, and the `openapi` catalog template whose
connections hold their credentials.

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from nectar.schema.access import access_of, secure_table_sql

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None

OPENAPI_TEMPLATE = {
    "key": "openapi",
    "name": "Imported OpenAPI connector",
    "description": "Credentials for a connector imported from an OpenAPI 3 document (Connectors page): "
    "an API key, a bearer token or a user name and password, sent as the document's security schemes say.",
    "config_schema": {
        "type": "object",
        "required": ["connector"],
        "additionalProperties": False,
        "properties": {"connector": {"type": "string", "minLength": 1, "maxLength": 100}},
    },
    "credentials_schema": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "api_key": {"type": "string", "maxLength": 4000},
            "token": {"type": "string", "maxLength": 4000},
            "username": {"type": "string", "maxLength": 200},
            "password": {"type": "string", "maxLength": 1000},
        },
    },
}


def upgrade() -> None:
    connectors = op.create_table(
        "imported_connectors",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("base_url", sa.String(length=2000), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("operations", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("document_bytes", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_imported_connectors_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_imported_connectors_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_imported_connectors")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_imported_connectors_org_id_name")),
        info={"service": "core", "tenant_column": "org_id"},
    )
    for statement in secure_table_sql(connectors.name, access_of(connectors)):
        op.execute(statement)
    catalog = sa.table(
        "catalog_services",
        sa.column("key", sa.String),
        sa.column("name", sa.String),
        sa.column("description", sa.Text),
        sa.column("config_schema", sa.JSON),
        sa.column("credentials_schema", sa.JSON),
    )
    op.bulk_insert(catalog, [OPENAPI_TEMPLATE])


def downgrade() -> None:
    op.execute("DELETE FROM integration_connections WHERE service_key = 'openapi'")
    op.execute("DELETE FROM catalog_services WHERE key = 'openapi'")
    op.drop_table("imported_connectors")
