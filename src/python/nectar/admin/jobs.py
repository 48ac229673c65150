"""Admin's background jobs: platform upkeep across every tenant, as nectar_admin (BYPASSRLS).
Run by `admin.pex worker`."""

from __future__ import annotations

import logging

import procrastinate
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from nectar.core.contract.runs import LOST_RUN, RECOVER_TASK
from nectar.core.contract.runs import QUEUE as CORE_QUEUE
from nectar.shared import throttle
from nectar.shared.jobs import QUEUED_ONCE, add_queue_upkeep

QUEUE = "admin"
DEFAULT_RUN_RETENTION_DAYS = 30
blueprint = procrastinate.Blueprint()
add_queue_upkeep(blueprint, QUEUE)
_engine: Engine | None = None
log = logging.getLogger(__name__)


def bind(engine: Engine) -> None:
    global _engine
    _engine = engine


def _bound_engine() -> Engine:
    assert _engine is not None, "bind(engine) before running the worker"
    return _engine


def run_retention_days(conn) -> int:
    """System setting `run_retention_days` ({"days": N}), editable by staff; 30 by default."""
    value = conn.execute(text("SELECT value FROM system_settings WHERE key = 'run_retention_days'")).scalar()
    try:
        return max(1, int(value["days"])) if value else DEFAULT_RUN_RETENTION_DAYS
    except (KeyError, TypeError, ValueError):
        return DEFAULT_RUN_RETENTION_DAYS


# Only runs that have ended: one still waiting (up to 30 days, then its approval or event timeout)
# or running is kept however long ago it was queued.
_PRUNE_SQL = text(
    "DELETE FROM workflow_runs WHERE id IN (SELECT id FROM workflow_runs "
    "WHERE status IN ('succeeded', 'failed', 'cancelled') "
    "AND COALESCE(finished_at, queued_at) < now() - make_interval(days => :days) "
    # Implied (a run ends after it is queued), and it lets the index on queued_at bound the scan.
    "AND queued_at < now() - make_interval(days => :days) LIMIT :batch)"
)


def prune(engine: Engine, batch: int = 10_000) -> int:
    """Deletes workflow runs that ended longer ago than the retention (and, by cascade, their
    checkpoints, events and approvals), in batches so a large backlog never holds long locks; also
    drops expired rate-limit counters."""
    deleted = 0
    with engine.begin() as conn:
        days = run_retention_days(conn)
    while True:
        with engine.begin() as conn:
            count = conn.execute(_PRUNE_SQL, {"days": days, "batch": batch}).rowcount
        deleted += count
        if count < batch:
            break
    with Session(engine) as session, session.begin():
        throttle.prune(session)
    log.info("pruned %d workflow runs older than %d days", deleted, days)
    return deleted


@blueprint.periodic(cron="17 3 * * *")
@blueprint.task(name="admin.prune", queue=QUEUE, pass_context=False)
def prune_daily(timestamp: int) -> None:
    prune(_bound_engine())


# At most this many lost runs are handed back a minute: a flood of them (a queue emptied by hand)
# reaches core's workers as a stream, not all at once.
LOST_RUNS_PER_SWEEP = 500
_HAND_BACK_SQL = text(f"""
    INSERT INTO procrastinate_jobs (queue_name, task_name, queueing_lock, args)
    SELECT '{CORE_QUEUE}', '{RECOVER_TASK}', 'recover:' || r.id, jsonb_build_object('org_id', r.org_id, 'run_id', r.id)
    FROM workflow_runs r
    WHERE {LOST_RUN}
    -- handed back already and not yet looked at: the limit is for the others
    AND NOT EXISTS (SELECT FROM procrastinate_jobs j WHERE j.queueing_lock = 'recover:' || r.id AND j.status = 'todo')
    LIMIT :most
    {QUEUED_ONCE}
    """)  # noqa: S608 - constants only


def hand_back_lost_runs(engine: Engine, most: int = LOST_RUNS_PER_SWEEP) -> int:
    """Hands core every run that has lost its next activation (core/contract/runs.py), across
    organizations; returns how many."""
    with engine.begin() as conn:
        handed = conn.execute(_HAND_BACK_SQL, {"most": most}).rowcount
    if handed:
        log.warning("handed %d runs without a coming activation back to core", handed)
    return handed


@blueprint.periodic(cron="* * * * *")
@blueprint.task(name="admin.hand_back_lost_runs", queue=QUEUE, pass_context=False)
def hand_back_lost_runs_every_minute(timestamp: int) -> None:
    hand_back_lost_runs(_bound_engine())
