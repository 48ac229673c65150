"""Admin's background jobs: platform upkeep across every tenant, as nectar_admin (BYPASSRLS).
Run by `admin.pex worker`."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import procrastinate
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from nectar.core.contract.plans import plan_of
from nectar.core.contract.runs import LOST_RUN, RECOVER_TASK
from nectar.core.contract.runs import QUEUE as CORE_QUEUE
from nectar.shared import throttle
from nectar.shared.jobs import QUEUED_ONCE, add_queue_upkeep
from nectar.shared.mail import Email, queue_email_once, quoted

QUEUE = "admin"
DEFAULT_RUN_RETENTION_DAYS = 30
blueprint = procrastinate.Blueprint()
add_queue_upkeep(blueprint, QUEUE)
_engine: Engine | None = None
_core_url = ""
log = logging.getLogger(__name__)


def bind(engine: Engine, core_url: str = "") -> None:
    """The database the tasks use, and core's public address for the links in their email."""
    global _engine, _core_url
    _engine, _core_url = engine, core_url


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


# An organization whose runs this month reach this share of its plan's included runs is told, once
# a month: its owners and admins each get one message (the outbox's dedupe key holds it to one).
USAGE_WARNING_SHARE = 0.8
# A name the organization chose is one line in a subject (a line break made the message unsendable).
NAME_IN_SUBJECT = 60
_MONTH_USAGE_SQL = text(
    "SELECT o.id, o.name, o.plan, sum(u.runs) FROM organizations o JOIN usage_daily u ON u.org_id = o.id "
    "WHERE u.day >= :first AND o.status = 'active' GROUP BY o.id"
)
_TOLD_SQL = text(
    "SELECT u.id, u.email FROM memberships m JOIN users u ON u.id = m.user_id "
    "WHERE m.org_id = :org AND m.role IN ('owner', 'admin') AND u.is_active ORDER BY m.created_at LIMIT 20"
)


def warn_usage(engine: Engine, core_url: str = "", now: datetime | None = None) -> int:
    """Emails the owners and admins of every organization past USAGE_WARNING_SHARE of its plan's
    runs this month, once each a month; returns how many messages were queued."""
    first = (now or datetime.now(UTC)).date().replace(day=1)
    queued = 0
    with Session(engine) as session, session.begin():
        for org_id, name, plan_key, runs in session.execute(_MONTH_USAGE_SQL, {"first": first}).all():
            plan = plan_of(plan_key)
            if runs < USAGE_WARNING_SHARE * plan.included.runs:
                continue
            past = (
                "Runs past them are billed per run."
                if plan.overage
                else "Once they are used, new runs are refused until the month ends (UTC), unless you "
                "move to a paid plan."
            )
            body = (
                f"{name} has used {int(runs):,} of the {plan.included.runs:,} runs its {plan.name} plan "
                f"includes this month ({runs / plan.included.runs:.0%}). {past}\n\n"
                f"Your usage, day by day: {core_url}/dashboard\n"
            )
            share = f"{runs / plan.included.runs:.0%}"
            subject = f"{quoted(name, NAME_IN_SUBJECT)} has used {share} of this month's runs"
            for user_id, email in session.execute(_TOLD_SQL, {"org": org_id}).all():
                queued += queue_email_once(
                    session,
                    Email(
                        to=email,
                        subject=subject,
                        body_text=body,
                        category="usage.warning",
                        dedupe_key=f"usage:{org_id}:{first:%Y-%m}:{user_id}",
                    ),
                )
    return queued


@blueprint.periodic(cron="23 * * * *")
@blueprint.task(name="admin.warn_usage", queue=QUEUE, pass_context=False)
def warn_usage_hourly(timestamp: int) -> None:
    told = warn_usage(_bound_engine(), _core_url)
    if told:
        log.info("usage warnings queued: %d", told)
