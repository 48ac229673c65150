"""Job queue (procrastinate's schema) and the workflow schedule index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from importlib import resources

import sqlalchemy as sa
from alembic import op

from nectar.schema.access import access_of, secure_table_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SERVICE_ROLES = "nectar_app_user, nectar_marketing, nectar_admin"
GRANT_QUEUE_TABLES = """
DO $$
DECLARE t text;
BEGIN
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'procrastinate\\_%' LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %I TO ROLES', t);
    END LOOP;
END $$
"""


def upgrade() -> None:
    # procrastinate's schema as the installed version ships it (`procrastinate schema --apply`).
    op.execute(resources.files("procrastinate.sql").joinpath("schema.sql").read_text())
    # Every service's worker and web process use the queue: jobs carry ids, never tenant data.
    op.execute(GRANT_QUEUE_TABLES.replace("ROLES", SERVICE_ROLES))
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {SERVICE_ROLES}")
    schedules = op.create_table(
        "workflow_schedules",
        sa.Column("workflow_id", sa.UUID(), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("cron", sa.String(length=100), nullable=False),
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_schedules_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workflow_id", name=op.f("pk_workflow_schedules")),
        info={"service": "core"},
    )
    op.create_index("ix_workflow_schedules_next_run_at", "workflow_schedules", ["next_run_at"], unique=False)
    for statement in secure_table_sql(schedules.name, access_of(schedules)):
        op.execute(statement)


def downgrade() -> None:
    op.drop_index("ix_workflow_schedules_next_run_at", table_name="workflow_schedules")
    op.drop_table("workflow_schedules")
    op.execute("""
        DO $$
        DECLARE r record;
        BEGIN
            FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'procrastinate\\_%' LOOP
                EXECUTE format('DROP TABLE %I CASCADE', r.tablename);
            END LOOP;
            FOR r IN SELECT p.oid::regprocedure AS f FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                     WHERE n.nspname = 'public' AND p.proname LIKE 'procrastinate\\_%' LOOP
                EXECUTE format('DROP FUNCTION %s CASCADE', r.f);
            END LOOP;
            FOR r IN SELECT typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                     WHERE n.nspname = 'public' AND typname LIKE 'procrastinate\\_%' AND typtype IN ('c', 'e') LOOP
                EXECUTE format('DROP TYPE IF EXISTS %I CASCADE', r.typname);
            END LOOP;
        END $$
        """)
