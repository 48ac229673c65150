"""Every key of a tenant table includes org_id, so the tables can be distributed by org_id on Citus.

Citus enforces a primary key, unique constraint or foreign key of a distributed table only when it
includes the distribution column (each is then checked inside one shard). Ten tenant tables had
PRIMARY KEY (id) beside UNIQUE (org_id, id): the primary key becomes (org_id, id), the unique
constraint goes, and the same-tenant foreign keys that pointed at it are made again against the
primary key. API keys are unique per organization (the token names its organization). The
scheduler's index of schedules, a reference table on Citus, cannot refer to workflows (a
distributed table): it refers to its organization instead, and the scheduler drops a schedule
whose workflow is gone.

On a database with data this runs in one transaction: building each new primary key's index and
checking every re-made foreign key reads the whole table, under a lock that stops its writes.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-03
"""

from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None

TENANT_KEYED = (
    "invitations",
    "api_keys",
    "workflows",
    "workflow_versions",
    "workflow_runs",
    "workflow_run_events",
    "workflow_approvals",
    "endpoints",
    "integration_connections",
    "alert_rules",
)
# name -> (table, its column beside org_id, parent): each references the parent's (org_id, id).
SAME_TENANT_KEYS = {
    "fk_workflow_versions_org_id_workflows": ("workflow_versions", "workflow_id", "workflows"),
    "fk_endpoints_org_id_workflows": ("endpoints", "workflow_id", "workflows"),
    "fk_alert_rules_org_id_workflows": ("alert_rules", "workflow_id", "workflows"),
    "fk_workflow_run_checkpoints_org_id_workflow_runs": (
        "workflow_run_checkpoints",
        "run_id",
        "workflow_runs",
    ),
    "fk_workflow_run_events_org_id_workflow_runs": ("workflow_run_events", "run_id", "workflow_runs"),
    "fk_workflow_approvals_org_id_workflow_runs": ("workflow_approvals", "run_id", "workflow_runs"),
}
SCHEDULE_TO_WORKFLOW = "fk_workflow_schedules_workflow_id_workflows"
SCHEDULE_TO_ORGANIZATION = "fk_workflow_schedules_organization_id_organizations"
SCHEDULE_ORGANIZATION_INDEX = "ix_workflow_schedules_organization_id"


def _rls_forced(tables, forced: bool) -> None:
    # Row-level security is forced on the owner too: the check of existing rows a new foreign key
    # makes would see none of them (and so pass whatever they hold) unless it is lifted (as in 0010).
    for table in tables:
        op.execute(f"ALTER TABLE {table} {'FORCE' if forced else 'NO FORCE'} ROW LEVEL SECURITY")


def _make_same_tenant_keys() -> None:
    tables = {table for table, _, _ in SAME_TENANT_KEYS.values()} | {
        p for _, _, p in SAME_TENANT_KEYS.values()
    }
    _rls_forced(sorted(tables), forced=False)
    for name, (table, column, parent) in SAME_TENANT_KEYS.items():
        op.create_foreign_key(name, table, parent, ["org_id", column], ["org_id", "id"], ondelete="CASCADE")
    _rls_forced(sorted(tables), forced=True)


def upgrade() -> None:
    op.drop_constraint(SCHEDULE_TO_WORKFLOW, "workflow_schedules", type_="foreignkey")
    for name, (table, _, _) in SAME_TENANT_KEYS.items():
        op.drop_constraint(name, table, type_="foreignkey")
    for table in TENANT_KEYED:
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT uq_{table}_org_id_id, DROP CONSTRAINT pk_{table}, "
            f"ADD CONSTRAINT pk_{table} PRIMARY KEY (org_id, id)"
        )
    op.execute(
        "ALTER TABLE api_keys DROP CONSTRAINT uq_api_keys_key_hash, "
        "ADD CONSTRAINT uq_api_keys_org_id_key_hash UNIQUE (org_id, key_hash)"
    )
    _make_same_tenant_keys()
    op.create_index(SCHEDULE_ORGANIZATION_INDEX, "workflow_schedules", ["organization_id"])
    _rls_forced(["organizations"], forced=False)
    op.create_foreign_key(
        SCHEDULE_TO_ORGANIZATION,
        "workflow_schedules",
        "organizations",
        ["organization_id"],
        ["id"],
        ondelete="CASCADE",
    )
    _rls_forced(["organizations"], forced=True)


def downgrade() -> None:
    op.drop_constraint(SCHEDULE_TO_ORGANIZATION, "workflow_schedules", type_="foreignkey")
    op.drop_index(SCHEDULE_ORGANIZATION_INDEX, table_name="workflow_schedules")
    for name, (table, _, _) in SAME_TENANT_KEYS.items():
        op.drop_constraint(name, table, type_="foreignkey")
    op.execute(
        "ALTER TABLE api_keys DROP CONSTRAINT uq_api_keys_org_id_key_hash, "
        "ADD CONSTRAINT uq_api_keys_key_hash UNIQUE (key_hash)"
    )
    for table in TENANT_KEYED:
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT pk_{table}, ADD CONSTRAINT pk_{table} PRIMARY KEY (id), "
            f"ADD CONSTRAINT uq_{table}_org_id_id UNIQUE (org_id, id)"
        )
    _make_same_tenant_keys()
    _rls_forced(["workflows"], forced=False)
    # Schedules whose workflow went while nothing cascaded would fail the old key.
    op.execute(
        "DELETE FROM workflow_schedules s WHERE NOT EXISTS (SELECT 1 FROM workflows w WHERE w.id = s.workflow_id)"
    )
    op.create_foreign_key(
        SCHEDULE_TO_WORKFLOW, "workflow_schedules", "workflows", ["workflow_id"], ["id"], ondelete="CASCADE"
    )
    _rls_forced(["workflows"], forced=True)
