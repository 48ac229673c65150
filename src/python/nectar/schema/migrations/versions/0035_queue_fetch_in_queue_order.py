"""The job queue's fetch costs the same whatever the table's statistics say.

The fetch of migration 0034 is cheap when PostgreSQL walks the waiting jobs in priority order,
stops at the first it may take, and looks up only that job's lock. Statistics taken before a burst
(say while only lock-free jobs of another queue waited, which autovacuum can leave in place for the
burst's whole drain) mislead it two ways:
- it believes almost no job matches, and plans to collect every waiting job of the queue, check
  each against its lock, and sort them: 5 ms instead of 0.1 ms for a fetch from a backlog of 2,000
  runs in lanes;
- it believes no job has a lock, and plans the lock checks as joins that read the whole index of
  waiting jobs for every candidate, lock-free ones included: 1 ms instead of 0.05 ms for a no-op
  job behind 2,000 others.

Here the lock checks are made only for a job that has a lock (a lock-free job is taken without
them), each a lookup of that one lock, and sorting is off inside the function: the walk in the
queue's order is the only plan left. It chooses the same job (tests/core/test_queue_fetch.py
compares it with procrastinate's rule on random queues); benchmarks/queue_fetch.py measures both
cases.

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-05
"""

import importlib

from alembic import op

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None

SIGNATURE = "procrastinate_fetch_job_v2(character varying[], bigint)"
MARK = "nectar: fetch in queue order, whatever the statistics (migration 0035)"

_FETCH = """
CREATE OR REPLACE FUNCTION procrastinate_fetch_job_v2(
    target_queue_names character varying[],
    p_worker_id bigint
)
    RETURNS procrastinate_jobs
    LANGUAGE plpgsql
    SET enable_sort = off
    SET enable_incremental_sort = off
    SET enable_seqscan = off
AS $$
DECLARE
    found_jobs procrastinate_jobs;
BEGIN
    WITH candidate AS (
        SELECT jobs.*
            FROM procrastinate_jobs AS jobs
            WHERE
                jobs.status = 'todo'
                AND (target_queue_names IS NULL OR jobs.queue_name = ANY( target_queue_names ))
                AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
                AND (
                    jobs.lock IS NULL
                    OR (
                        -- no job of its lock is running
                        NOT EXISTS (
                            SELECT 1 FROM procrastinate_jobs AS running
                            WHERE running.lock = jobs.lock AND running.status = 'doing'
                        )
                        -- and it is its lock's first waiting job (in any queue, due or not)
                        AND jobs.id = (
                            SELECT lane_head.id FROM procrastinate_jobs AS lane_head
                            WHERE lane_head.lock = jobs.lock AND lane_head.status = 'todo'
                            ORDER BY lane_head.priority DESC, lane_head.id ASC LIMIT 1
                        )
                    )
                )
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


def upgrade() -> None:
    # A lock's waiting jobs in the queue's order: its first is one lookup.
    op.execute(
        "CREATE INDEX procrastinate_jobs_lock_head_idx ON procrastinate_jobs (lock, priority DESC, id) "
        "WHERE status = 'todo'"
    )
    op.execute("DROP INDEX procrastinate_jobs_lock_todo_idx")
    op.execute(_FETCH)
    op.execute(f"COMMENT ON FUNCTION {SIGNATURE} IS '{MARK}'")


def downgrade() -> None:
    # 0034's function again, without the settings (CREATE OR REPLACE keeps only what it says).
    previous = importlib.import_module("nectar.schema.migrations.versions.0034_queue_fetch_under_backlog")
    op.execute(previous._FETCH)
    op.execute(
        "CREATE INDEX procrastinate_jobs_lock_todo_idx ON procrastinate_jobs (lock, priority, id) "
        "WHERE status = 'todo'"
    )
    op.execute("DROP INDEX procrastinate_jobs_lock_head_idx")
    op.execute(f"COMMENT ON FUNCTION {SIGNATURE} IS '{previous.MARK}'")
