"""Usage metering: usage_daily, kept by the database as runs end, and each run's active time. Two statement triggers on
workflow_runs add what changed, per row, to the day the run ended: its counts once it is final,
less what it counted before (a run cancelled, then completed with more steps, counts once, in
full). A statement of many runs (the batched writer's) costs one grouped upsert and no round trip.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from nectar.schema.access import access_of, secure_table_sql

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

SHARDS = 16  # nectar.schema.models.usage.USAGE_SHARDS when this was written


def _counts(rows: str, sign: str) -> str:
    """What the runs in `rows` add to their days (`sign` 1), or take away (-1): ended runs only,
    and no tests of drafts."""
    return f"""
        SELECT r.org_id, (COALESCE(r.finished_at, now()) AT TIME ZONE 'UTC')::date AS day, r.trigger,
               {sign} AS runs, {sign} * COALESCE(jsonb_array_length(r.steps), 0) AS steps,
               {sign} * (SELECT count(*) FROM jsonb_array_elements(COALESCE(r.steps, '[]'))
                         AS s WHERE s ->> 'step_type' = 'http_request') AS http_calls,
               {sign} * COALESCE(r.active_ms, r.duration_ms, 0) AS run_ms
        FROM {rows} AS r
        WHERE r.status IN ('succeeded', 'failed', 'cancelled') AND r.trigger <> 'test'
    """  # noqa: S608 - constants only


def _upsert(changes: str) -> str:
    return f"""
    INSERT INTO usage_daily AS u (org_id, day, trigger, shard, runs, steps, http_calls, run_ms)
    SELECT org_id, day, trigger, pg_backend_pid() % {SHARDS}, sum(runs), sum(steps), sum(http_calls), sum(run_ms)
    FROM ({changes}) AS c
    GROUP BY org_id, day, trigger
    HAVING sum(runs) <> 0 OR sum(steps) <> 0 OR sum(http_calls) <> 0 OR sum(run_ms) <> 0
    ORDER BY org_id, day, trigger  -- one order of row locks for every writer: no deadlock
    ON CONFLICT (org_id, day, trigger, shard) DO UPDATE SET
        runs = u.runs + EXCLUDED.runs, steps = u.steps + EXCLUDED.steps,
        http_calls = u.http_calls + EXCLUDED.http_calls, run_ms = u.run_ms + EXCLUDED.run_ms
    """  # noqa: S608 - constants only


INSERTED = _upsert(_counts("new_runs", "1"))
UPDATED = _upsert(f"{_counts('new_runs', '1')} UNION ALL {_counts('old_runs', '-1')}")


def _function(name: str, body: str) -> str:
    return f"""
    CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        {body};
        RETURN NULL;
    END $$
    """


def upgrade() -> None:
    # A run's time spent running, over its activations (duration_ms also holds its waits); runs
    # recorded before count their duration, the best there is.
    op.add_column("workflow_runs", sa.Column("active_ms", sa.Integer(), nullable=True))
    usage = op.create_table(
        "usage_daily",
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("runs", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("steps", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("http_calls", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("run_ms", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_usage_daily_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "day", "trigger", "shard", name=op.f("pk_usage_daily")),
        info={"service": "core", "tenant_column": "org_id"},
    )
    for statement in secure_table_sql(usage.name, access_of(usage)):
        op.execute(statement)
    op.execute(_function("count_usage_of_new_runs", INSERTED))
    op.execute(_function("count_usage_of_changed_runs", UPDATED))
    # What ended before metering began is counted once, so usage agrees with the runs kept.
    _owner_sees_every_tenant(True)
    op.execute(_upsert(_counts("workflow_runs", "1")))
    _owner_sees_every_tenant(False)
    op.execute(
        "CREATE TRIGGER count_usage AFTER INSERT ON workflow_runs REFERENCING NEW TABLE AS new_runs "
        "FOR EACH STATEMENT EXECUTE FUNCTION count_usage_of_new_runs()"
    )
    op.execute(
        "CREATE TRIGGER count_usage_changes AFTER UPDATE ON workflow_runs "
        "REFERENCING OLD TABLE AS old_runs NEW TABLE AS new_runs "
        "FOR EACH STATEMENT EXECUTE FUNCTION count_usage_of_changed_runs()"
    )


def _owner_sees_every_tenant(on: bool) -> None:
    # Row-level security is forced on the owner too: it would read and write no tenant's rows.
    for table in ("workflow_runs", "usage_daily"):
        op.execute(f"ALTER TABLE {table} {'NO FORCE' if on else 'FORCE'} ROW LEVEL SECURITY")


def downgrade() -> None:
    op.execute("DROP TRIGGER count_usage_changes ON workflow_runs")
    op.execute("DROP TRIGGER count_usage ON workflow_runs")
    op.execute("DROP FUNCTION count_usage_of_changed_runs()")
    op.execute("DROP FUNCTION count_usage_of_new_runs()")
    op.drop_table("usage_daily")
    op.drop_column("workflow_runs", "active_ms")
