"""The job queue's fetch stays cheap under a backlog.

procrastinate's `procrastinate_fetch_job_v2` (3.x) checks each candidate job against the rest of
its lock in one NOT EXISTS whose OR (a job of the lock running, or waiting ahead of it) no index
can serve: for every candidate it walks all of the lock's waiting jobs. Core's runs go round each
organization's lanes (locks), so one organization with a backlog made every fetch scan
candidates x lane. With 10,000 runs queued in its 2 lanes, both busy, each idle worker slot's
fetch (every POLL_SECONDS) cost 406 ms of the database's CPU, 3 ms now; a fetch that takes a run
1.84 ms, 0.35 ms now (benchmarks/queue_fetch.py).

The function is the same query with the OR split into three NOT EXISTS, each an index lookup:
a running job of the lock (procrastinate's unique index on a running job's lock), a waiting job
of the lock with a higher priority, or with the same priority queued earlier (the index below).
It chooses the same job (tests/core/test_queue_fetch.py compares the two on random queues).

procrastinate owns the function: an upgrade of it that replaces the function again loses only
the speed, and the test fails if the installed procrastinate no longer calls this one.

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-04
"""

from importlib import resources

from alembic import op

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None

MARK = "nectar: fetch under backlog (migration 0034)"

_FETCH = """
CREATE OR REPLACE FUNCTION procrastinate_fetch_job_v2(
    target_queue_names character varying[],
    p_worker_id bigint
)
    RETURNS procrastinate_jobs
    LANGUAGE plpgsql
AS $$
DECLARE
    found_jobs procrastinate_jobs;
BEGIN
    WITH candidate AS (
        SELECT jobs.*
            FROM procrastinate_jobs AS jobs
            WHERE
                -- a job of its lock is running
                NOT EXISTS (
                    SELECT 1 FROM procrastinate_jobs AS other_jobs
                    WHERE jobs.lock IS NOT NULL AND other_jobs.lock = jobs.lock
                      AND other_jobs.status = 'doing'
                )
                -- a waiting job of its lock has a higher priority
                AND NOT EXISTS (
                    SELECT 1 FROM procrastinate_jobs AS other_jobs
                    WHERE jobs.lock IS NOT NULL AND other_jobs.lock = jobs.lock
                      AND other_jobs.status = 'todo' AND other_jobs.priority > jobs.priority
                )
                -- a waiting job of its lock has the same priority and was queued first
                AND NOT EXISTS (
                    SELECT 1 FROM procrastinate_jobs AS other_jobs
                    WHERE jobs.lock IS NOT NULL AND other_jobs.lock = jobs.lock
                      AND other_jobs.status = 'todo' AND other_jobs.priority = jobs.priority
                      AND other_jobs.id < jobs.id
                )
                AND jobs.status = 'todo'
                AND (target_queue_names IS NULL OR jobs.queue_name = ANY( target_queue_names ))
                AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
            ORDER BY jobs.priority DESC, jobs.id ASC LIMIT 1
            FOR UPDATE OF jobs SKIP LOCKED
    )
    UPDATE procrastinate_jobs
        SET status = 'doing', worker_id = p_worker_id
        FROM candidate
        WHERE procrastinate_jobs.id = candidate.id
        RETURNING procrastinate_jobs.* INTO found_jobs;

    RETURN found_jobs;
END;
$$
"""

# procrastinate's own fetch, as its migration made it: the downgrade runs that again.
PROCRASTINATES = "03.03.00_01_pre_priority_lock_fetch_job.sql"


def upgrade() -> None:
    op.execute(
        "CREATE INDEX procrastinate_jobs_lock_todo_idx ON procrastinate_jobs (lock, priority, id) "
        "WHERE status = 'todo'"
    )
    op.execute(_FETCH)
    op.execute(f"COMMENT ON FUNCTION procrastinate_fetch_job_v2(character varying[], bigint) IS '{MARK}'")


def downgrade() -> None:
    # Dropped and created again (the mark goes with it), as procrastinate's migration does.
    op.execute(resources.files("procrastinate.sql.migrations").joinpath(PROCRASTINATES).read_text())
    op.execute("DROP INDEX procrastinate_jobs_lock_todo_idx")
