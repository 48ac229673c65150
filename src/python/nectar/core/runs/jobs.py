"""Core's background jobs: asynchronous workflow runs (manual, scheduled, re-runs) and the
scheduler that turns cron triggers into runs. Run by `core.pex worker`. How runs are queued, and
shared out fairly between organizations: queue.py."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import procrastinate
from croniter import croniter
from flask import Flask
from sqlalchemy import delete, select, text, update

from nectar.core.contract.runs import LOST_RUN, QUEUE, RECOVER_TASK, RUN_TASK, WAKE_TASK
from nectar.core.runs.queue import QueueFull, queue_run, schedule_activation
from nectar.core.runs.runner import activate_run
from nectar.core.workflows.engine import ASYNC_LIMITS
from nectar.schema.models import Workflow, WorkflowRun, WorkflowSchedule
from nectar.shared.database import db, is_database_outage, scope_session
from nectar.shared.jobs import add_queue_upkeep, own_job

blueprint = procrastinate.Blueprint()
# Upkeep: a run whose worker died is handed back (activate_run resumes it from its journal), and
# finished jobs are removed after a day.
RETRY_STALLED_TASK = add_queue_upkeep(blueprint, QUEUE)
_flask_app: Flask | None = None
log = logging.getLogger(__name__)


def bind(app: Flask) -> None:
    """Tasks run inside this app's context (database session, settings, key ring)."""
    global _flask_app
    _flask_app = app


@contextmanager
def bound_app_context() -> Iterator[None]:
    """A task's context: the bound app's, whose database session is given back at the end."""
    assert _flask_app is not None, "bind(app) before running the worker"
    with _flask_app.app_context():
        try:
            yield
        finally:
            db.session.remove()


class ActivationRetry(procrastinate.BaseRetryStrategy):
    """An activation that lost the database is retried for as long as the outage lasts (the run
    resumes from its journal); any other error (a deadlock, a cancelled query too) `attempts` times,
    waiting twice as long each time, at most `longest_wait` seconds: a retry waiting for later holds
    back its lane."""

    attempts, longest_wait = 5, 60

    def get_retry_decision(self, *, exception: BaseException, job) -> procrastinate.RetryDecision | None:
        if is_database_outage(exception):
            return procrastinate.RetryDecision(retry_in={"seconds": min(60, 2 ** min(job.attempts, 6))})
        if job.attempts >= self.attempts:
            return None
        return procrastinate.RetryDecision(
            retry_in={"seconds": min(self.longest_wait, 2 ** (job.attempts + 1))}
        )


# A wake-up may be stale: the run was woken earlier (an event came) and now waits for later, or
# has ended. Replaying it for nothing would cost a whole activation.
_DUE_SQL = text(
    "SELECT 1 FROM workflow_runs WHERE id = :run_id AND status = 'waiting' "
    "AND wake_at <= now() + interval '5 seconds'"
)


@blueprint.task(name=WAKE_TASK, queue=QUEUE, retry=ActivationRetry())  # a waiting run's only timer
def wake_run(org_id: str, run_id: str) -> None:
    _activate_if(_DUE_SQL, org_id, run_id)


def _activate_if(condition, org_id: str, run_id: str) -> bool:
    """Queues the run's activation when `condition` (a query on :run_id, in the run's organization)
    finds it; True when it did."""
    with bound_app_context():
        scope_session(db.session, org_id=uuid.UUID(org_id))
        found = db.session.scalar(condition, {"run_id": run_id}) is not None
        if found:
            schedule_activation(db.session, uuid.UUID(org_id), uuid.UUID(run_id))
        db.session.commit()
        return found


_LOST_SQL = text(f"SELECT 1 FROM workflow_runs r WHERE r.id = :run_id AND {LOST_RUN}")  # noqa: S608


@blueprint.task(name=RECOVER_TASK, queue=QUEUE, retry=ActivationRetry())
def recover_run(org_id: str, run_id: str) -> None:
    """A run admin's sweep found without a job coming for it (contract/runs.py): if it still has
    none, its activation is queued; it resumes from its journal."""
    if _activate_if(_LOST_SQL, org_id, run_id):
        log.warning("run %s of organization %s had no activation coming; one is queued", run_id, org_id)


@blueprint.task(name=RUN_TASK, queue=QUEUE, retry=ActivationRetry(), pass_context=True)
def run_workflow(context: procrastinate.JobContext, org_id: str, run_id: str) -> None:
    with bound_app_context():
        activate_run(
            db.session, uuid.UUID(org_id), uuid.UUID(run_id), limits=ASYNC_LIMITS, job=own_job(context)
        )


@blueprint.periodic(cron="* * * * *")
@blueprint.task(name="core.tick_schedules", queue=QUEUE, pass_context=False)
def tick_schedules(timestamp: int) -> None:
    with bound_app_context():
        start_due_runs(db.session)


def start_due_runs(session, now: datetime | None = None, limit: int = 200) -> int:
    """Queues a run for every schedule that is due and moves it to its next time. Safe with several
    workers: rows are claimed with SKIP LOCKED, and the run's idempotency key is the due time."""
    now = now or datetime.now(UTC)
    due = (
        session.execute(
            select(WorkflowSchedule)
            .where(WorkflowSchedule.next_run_at <= now)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        .scalars()
        .all()
    )
    started = 0
    for schedule in due:
        scope_session(session, org_id=schedule.organization_id)
        workflow = session.get(Workflow, schedule.workflow_id)
        if workflow is not None and workflow.is_active and workflow.current_version:
            version_id = session.scalar(
                text("SELECT id FROM workflow_versions WHERE workflow_id = :w AND version = :v"),
                {"w": workflow.id, "v": workflow.current_version},
            )
            key = f"schedule:{schedule.next_run_at.isoformat()}"
            exists = session.scalar(
                select(WorkflowRun.id).where(
                    WorkflowRun.workflow_id == workflow.id, WorkflowRun.idempotency_key == key
                )
            )
            if exists is None:
                try:
                    queue_run(
                        session,
                        schedule.organization_id,
                        workflow.id,
                        version_id,
                        "schedule",
                        {"scheduled_for": schedule.next_run_at.isoformat()},
                        key=key,
                    )
                    started += 1
                except QueueFull:  # this time is skipped, as when a worker was down past it
                    log.warning(
                        "scheduled run of workflow %s skipped: its organization's queue is full", workflow.id
                    )
        scope_session(session)
        if workflow is None:  # its workflow is gone (no foreign key cascades here: the model says why)
            session.execute(
                delete(WorkflowSchedule).where(WorkflowSchedule.workflow_id == schedule.workflow_id)
            )
            continue
        session.execute(
            update(WorkflowSchedule)
            .where(WorkflowSchedule.workflow_id == schedule.workflow_id)
            .values(
                last_run_at=schedule.next_run_at, next_run_at=next_time(schedule.cron, schedule.timezone, now)
            )
        )
    session.commit()
    return started


def next_time(cron: str, timezone: str, after: datetime) -> datetime:
    local = after.astimezone(ZoneInfo(timezone))
    return croniter(cron, local).get_next(datetime).astimezone(UTC)


def sync_schedule(session, workflow: Workflow, definition: dict) -> None:
    """Keeps the schedule index in step with the current version's trigger."""
    trigger = definition.get("trigger", {})
    existing = session.get(WorkflowSchedule, workflow.id)
    if trigger.get("type") != "schedule":
        if existing is not None:
            session.delete(existing)
        return
    timezone = trigger.get("timezone") or "UTC"
    schedule = existing or WorkflowSchedule(workflow_id=workflow.id, organization_id=workflow.org_id)
    schedule.cron, schedule.timezone = trigger["cron"], timezone
    schedule.next_run_at = next_time(trigger["cron"], timezone, datetime.now(UTC))
    session.add(schedule)
