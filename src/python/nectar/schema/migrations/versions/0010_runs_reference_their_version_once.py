"""A workflow run references its version once instead of its organization, workflow and version.

Each foreign key is checked (a lookup and a row lock on the parent) for every run written, and
the three of them took about half of PostgreSQL's work in writing an endpoint call's run. One
key on (org_id, workflow_id, version_id) to the version keeps every guarantee: the version
belongs to the workflow and both to the organization, and deleting any of them still deletes
the runs (organization -> workflow -> version -> run cascades).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

OLD_KEYS = {  # name -> (columns, parent, parent columns)
    "fk_workflow_runs_org_id_organizations": (["org_id"], "organizations", ["id"]),
    "fk_workflow_runs_org_id_workflows": (["org_id", "workflow_id"], "workflows", ["org_id", "id"]),
    "fk_workflow_runs_org_id_workflow_versions": (
        ["org_id", "version_id"],
        "workflow_versions",
        ["org_id", "id"],
    ),
}
VERSION_KEY = "fk_workflow_runs_org_id_workflow_versions"
VERSION_TARGET = "uq_workflow_versions_org_id_workflow_id_id"


def _owner_sees_every_tenant(on: bool) -> None:
    # Row-level security is forced on the owner too, and the check of existing rows a new foreign
    # key makes would see none of them (so it would pass whatever they hold).
    for table in ("workflow_runs", "workflow_versions", "workflows", "organizations"):
        op.execute(f"ALTER TABLE {table} {'NO FORCE' if on else 'FORCE'} ROW LEVEL SECURITY")


def upgrade() -> None:
    op.create_unique_constraint(VERSION_TARGET, "workflow_versions", ["org_id", "workflow_id", "id"])
    for name in OLD_KEYS:
        op.drop_constraint(name, "workflow_runs", type_="foreignkey")
    _owner_sees_every_tenant(on=True)
    op.create_foreign_key(
        VERSION_KEY,
        "workflow_runs",
        "workflow_versions",
        ["org_id", "workflow_id", "version_id"],
        ["org_id", "workflow_id", "id"],
        ondelete="CASCADE",
    )
    _owner_sees_every_tenant(on=False)


def downgrade() -> None:
    op.drop_constraint(VERSION_KEY, "workflow_runs", type_="foreignkey")
    _owner_sees_every_tenant(on=True)
    for name, (columns, parent, parent_columns) in OLD_KEYS.items():
        op.create_foreign_key(name, "workflow_runs", parent, columns, parent_columns, ondelete="CASCADE")
    _owner_sees_every_tenant(on=False)
    op.drop_constraint(VERSION_TARGET, "workflow_versions", type_="unique")
