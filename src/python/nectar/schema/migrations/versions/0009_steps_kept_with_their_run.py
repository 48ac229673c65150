"""Workflow runs keep their steps in a jsonb column instead of a step_runs table.

Recording an endpoint call then writes one row, not one per step: each step row cost index
entries and a same-tenant foreign-key check, and the check alone took most of the time of
writing a run. Existing steps move into their runs.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from nectar.schema.access import TableAccess, secure_table_sql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

STEP_FIELDS = (
    "step_id text, step_type text, position int, attempt int, status text, input jsonb, output jsonb, "
    "error text, started_at timestamptz, finished_at timestamptz"
)


def _owner_sees_every_tenant(*tables: str, on: bool) -> None:
    # Row-level security is forced on the owner too; moving rows between tables needs all of them.
    for table in tables:
        op.execute(f"ALTER TABLE {table} {'NO FORCE' if on else 'FORCE'} ROW LEVEL SECURITY")


def upgrade() -> None:
    op.add_column(
        "workflow_runs",
        sa.Column("steps", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
    )
    _owner_sees_every_tenant("workflow_runs", "step_runs", on=True)
    op.execute("""
        UPDATE workflow_runs r SET steps = s.steps
        FROM (SELECT org_id, run_id,
                     jsonb_agg(jsonb_build_object('step_id', step_id, 'step_type', step_type, 'position', position,
                               'attempt', attempt, 'status', status, 'input', input, 'output', output,
                               'error', error, 'started_at', started_at, 'finished_at', finished_at)
                               ORDER BY position) AS steps
              FROM step_runs GROUP BY org_id, run_id) s
        WHERE r.org_id = s.org_id AND r.id = s.run_id
        """)
    _owner_sees_every_tenant("workflow_runs", on=False)
    op.drop_table("step_runs")


def downgrade() -> None:
    op.create_table(
        "step_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("step_id", sa.String(length=100), nullable=False),
        sa.Column("step_type", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="1", nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("input", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("output", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id", "run_id"],
            ["workflow_runs.org_id", "workflow_runs.id"],
            name=op.f("fk_step_runs_org_id_workflow_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_step_runs_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_step_runs")),
    )
    op.create_index(
        "ix_step_runs_org_id_run_id_position", "step_runs", ["org_id", "run_id", "position"], unique=False
    )
    for statement in secure_table_sql("step_runs", TableAccess(service="core", tenant_column="org_id")):
        op.execute(statement)
    _owner_sees_every_tenant("workflow_runs", "step_runs", on=True)
    op.execute(f"""
        INSERT INTO step_runs (org_id, run_id, step_id, step_type, position, attempt, status, input, output,
                               error, started_at, finished_at)
        SELECT r.org_id, r.id, s.step_id, s.step_type, s.position, s.attempt, s.status, s.input, s.output,
               s.error, s.started_at, s.finished_at
        FROM workflow_runs r, jsonb_to_recordset(r.steps) AS s({STEP_FIELDS})
        """)  # noqa: S608 - only the constant column list is filled in
    _owner_sees_every_tenant("workflow_runs", "step_runs", on=False)
    op.drop_column("workflow_runs", "steps")
