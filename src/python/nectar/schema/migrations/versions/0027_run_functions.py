"""A workflow worker's two statements per run, claiming it and completing it, become PL/pgSQL
functions. Sent as text in one round trip (nectar.shared.database.in_one_round_trip), each was
planned anew for every run: planning took four times as long as running the claim, and half as
long as running the completion. A function keeps its plans for the life of the server's session,
and so does so behind a transaction pooler, where prepared statements cannot live.

Revision ID: 0027
Revises: 0023
Create Date: 2026-12-03
"""

from alembic import op

revision = "0027"
down_revision = "0023"
branch_labels = None
depends_on = None

# Row-level security applies as ever: the functions run as their caller (SECURITY INVOKER), whose
# transaction names the tenant first. `use_column`: the result columns share the tables' names.
CLAIMED_RUN = """
CREATE FUNCTION claimed_workflow_run(run uuid)
RETURNS TABLE (id uuid, org_id uuid, workflow_id uuid, version_id uuid, definition jsonb, input jsonb,
               call_depth integer, trigger varchar, parent_run_id uuid, queued_at timestamptz,
               checkpoints json)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT r.id, r.org_id, r.workflow_id, r.version_id, r.definition, r.input, r.call_depth, r.trigger,
           r.parent_run_id, r.queued_at,
           (SELECT json_agg(json_build_array(c.step_key, c.status, c.output, c.error, c.record))
            FROM workflow_run_checkpoints c WHERE c.run_id = r.id)
    FROM workflow_runs r WHERE r.id = run AND r.status NOT IN ('succeeded', 'failed', 'cancelled');
END $$
"""

# A run that waited keeps the time it first started; its duration runs from then, and its active
# time adds up its activations' (`outcome`'s duration is its activation's). A run cancelled while it
# ran stays cancelled, with the steps it took (a cancellation stands).
COMPLETED_RUN = """
CREATE FUNCTION complete_workflow_run(run uuid, outcome jsonb)
RETURNS TABLE (org_id uuid, trigger varchar, status varchar, error text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH completed AS (
        UPDATE workflow_runs SET
               status = CASE WHEN workflow_runs.status = 'cancelled' THEN 'cancelled' ELSE r.status END,
               error = CASE WHEN workflow_runs.status = 'cancelled' THEN workflow_runs.error ELSE r.error END,
               output = r.output, started_at = COALESCE(workflow_runs.started_at, r.started_at),
               finished_at = r.finished_at,
               duration_ms = (EXTRACT(EPOCH FROM r.finished_at
                                      - COALESCE(workflow_runs.started_at, r.started_at)) * 1000)::int,
               active_ms = COALESCE(workflow_runs.active_ms, 0) + r.duration_ms,
               steps = r.steps, wake_at = NULL, waiting_for = NULL
        FROM jsonb_to_record(outcome) AS r(status text, output jsonb, error text, started_at timestamptz,
                                           finished_at timestamptz, duration_ms int, steps jsonb)
        WHERE workflow_runs.id = run
        RETURNING workflow_runs.org_id, workflow_runs.trigger, workflow_runs.status, workflow_runs.error
    )
    SELECT * FROM completed;
END $$
"""


def upgrade() -> None:
    op.execute(CLAIMED_RUN)
    op.execute(COMPLETED_RUN)


def downgrade() -> None:
    op.execute("DROP FUNCTION complete_workflow_run(uuid, jsonb)")
    op.execute("DROP FUNCTION claimed_workflow_run(uuid)")
