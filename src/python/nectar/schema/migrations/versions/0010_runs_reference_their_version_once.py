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


def upgrade() -> None:
    op.create_unique_constraint(VERSION_TARGET, "workflow_versions", ["org_id", "workflow_id", "id"])
    for name in OLD_KEYS:
        op.drop_constraint(name, "workflow_runs", type_="foreignkey")
    op.create_foreign_key(
        VERSION_KEY,
        "workflow_runs",
        "workflow_versions",
        ["org_id", "workflow_id", "version_id"],
        ["org_id", "workflow_id", "id"],
        ondelete="CASCADE",
        postgresql_not_valid=True,  # validated below without blocking writes to the runs meanwhile
    )
    op.execute(f"ALTER TABLE workflow_runs VALIDATE CONSTRAINT {VERSION_KEY}")


def downgrade() -> None:
    op.drop_constraint(VERSION_KEY, "workflow_runs", type_="foreignkey")
    for name, (columns, parent, parent_columns) in OLD_KEYS.items():
        op.create_foreign_key(name, "workflow_runs", parent, columns, parent_columns, ondelete="CASCADE")
    op.drop_constraint(VERSION_TARGET, "workflow_versions", type_="unique")
