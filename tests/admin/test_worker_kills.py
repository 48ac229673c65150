"""`admin worker` killed with SIGKILL in the middle of pruning old runs (retention), as deployed: the
batch it was deleting is rolled back with its connection, another worker takes the job over once the
dead one's heartbeat is stale, and exactly the runs past retention are gone."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from nectar.admin import jobs
from nectar.admin import main as admin_binary  # noqa: F401 - packs the worker command run below
from nectar.shared.config import Role
from nectar.shared.embedded_postgres import SUPERUSER
from nectar.shared.jobs import enqueue
from tests.admin.test_retention import _runs, _seed
from tests.concurrency import wait_for_lock_waiters
from tests.workers import wait_for, workers

pytestmark = pytest.mark.timeout(120)

TAKEOVER_SECONDS = 45  # STALLED_AFTER_SECONDS and one check every ten seconds, with margin
PRUNE = "DELETE FROM workflow_runs"


def _deleting(database) -> int:
    """Sessions still running the prune's DELETE (the killed worker's, until PostgreSQL finds its
    client gone)."""
    with database.connect(SUPERUSER, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE %s",
            (PRUNE + "%",),
        ).fetchone()[0]


def _prune_jobs(database, marker: int) -> list[str]:
    with database.connect(Role.ADMIN) as conn:
        rows = conn.execute(
            "SELECT status FROM procrastinate_jobs WHERE task_name = 'admin.prune' AND args = %s::jsonb",
            (f'{{"timestamp": {marker}}}',),
        ).fetchall()
    return [str(status) for (status,) in rows]


def test_a_worker_killed_mid_prune_leaves_the_runs_past_retention_deleted_and_no_other(database):
    ended, waiting = uuid.uuid4(), uuid.uuid4()
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute("DELETE FROM system_settings WHERE key = 'run_retention_days'")  # 30 days
        _seed(conn, ended, [1, 29, 31, 45, 90])
        _seed(conn, waiting, [40, 60], status="waiting")  # not ended: kept however old
    marker = uuid.uuid4().int % 1_000_000
    with database.connect(Role.ADMIN) as holder:
        # A row of the batch is locked, so the prune's DELETE waits there: mid-job, on demand.
        holder.execute(
            "SELECT id FROM workflow_runs WHERE org_id = %s AND queued_at < now() - interval '80 days' FOR UPDATE",
            (ended,),
        )
        engine = create_engine(database.url(Role.ADMIN))
        try:
            with Session(engine) as session, session.begin():
                enqueue(session, "admin.prune", {"timestamp": marker}, queue=jobs.QUEUE)
        finally:
            engine.dispose()
        with workers("admin", database.environ()) as start:
            first = start()
            wait_for_lock_waiters(database, 1, PRUNE)
            first.kill()
            holder.rollback()  # the dead worker's DELETE goes on, then finds its client gone
            wait_for(lambda: _deleting(database) == 0, 30, "the killed worker's DELETE to end")
            with database.connect(Role.ADMIN) as conn:
                assert _runs(conn, ended) == [1, 29, 31, 45, 90]  # its batch was rolled back
            start()
            wait_for(lambda: _prune_jobs(database, marker) == ["succeeded"], TAKEOVER_SECONDS, "the prune")
    with database.connect(Role.ADMIN) as conn:
        assert _runs(conn, ended) == [1, 29]
        assert _runs(conn, waiting) == [40, 60]
