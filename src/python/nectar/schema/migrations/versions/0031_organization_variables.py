"""An organization's variables and secrets for its workflows (`vars.NAME`, `secrets.NAME`): one row
per name, the organization leading the key; secrets encrypted under NECTAR_ENCRYPTION_KEYS.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from nectar.schema.access import access_of, secure_table_sql

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None

NAME_PATTERN = "^[A-Z_][A-Z0-9_]{0,63}$"


def _table(name: str, *columns, checks=()):
    table = op.create_table(
        name,
        sa.Column("org_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        *columns,
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(f"name ~ '{NAME_PATTERN}'", name=op.f(f"ck_{name}_name")),
        *checks,
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f(f"fk_{name}_org_id_organizations"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("org_id", "name", name=op.f(f"pk_{name}")),
        info={"service": "core", "tenant_column": "org_id"},
    )
    for statement in secure_table_sql(table.name, access_of(table)):
        op.execute(statement)


def upgrade() -> None:
    _table(
        "organization_variables",
        sa.Column("value", sa.Text(), nullable=False),
        checks=[
            sa.CheckConstraint("char_length(value) <= 4096", name=op.f("ck_organization_variables_value"))
        ],
    )
    _table(
        "organization_secrets",
        sa.Column("value_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("organization_secrets")
    op.drop_table("organization_variables")
