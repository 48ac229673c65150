"""Tenant endpoints: tell core's processes when an organization's routes change.

Core keeps each organization's endpoints, their workflow versions, its plan and status and its
API keys in memory. A row trigger on each of those tables sends NOTIFY nectar_routes with the
organization's id when its transaction commits, and every core process drops that organization.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# table -> the column holding its organization's id
ROUTE_TABLES = {
    "organizations": "id",
    "endpoints": "org_id",
    "workflows": "org_id",
    "workflow_versions": "org_id",
    "api_keys": "org_id",
}


def upgrade() -> None:
    op.execute("""
        CREATE FUNCTION notify_route_change() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            changed record;
        BEGIN
            IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
            PERFORM pg_notify('nectar_routes', to_jsonb(changed) ->> TG_ARGV[0]);
            RETURN NULL;
        END
        $$
        """)
    for table, column in ROUTE_TABLES.items():
        op.execute(
            f"CREATE TRIGGER route_change AFTER INSERT OR UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION notify_route_change('{column}')"
        )


def downgrade() -> None:
    for table in ROUTE_TABLES:
        op.execute(f"DROP TRIGGER route_change ON {table}")
    op.execute("DROP FUNCTION notify_route_change()")
