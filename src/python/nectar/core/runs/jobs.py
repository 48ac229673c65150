"""Core's background jobs: asynchronous workflow runs (manual, scheduled, re-runs) and the
scheduler that turns cron triggers into runs. Run by `core.pex worker`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import procrastinate
import psycopg
from croniter import croniter
from flask import Flask
from sqlalchemy import select, text, update
from sqlalchemy.exc import OperationalError

from nectar.core.runs.runner import activate_run
from nectar.core.workflows.engine import ASYNC_LIMITS
from nectar.core.workflows.expressions import json_safe
from nectar.schema.models import Workflow, WorkflowRun, WorkflowSchedule
from nectar.shared.database import db, scope_session
from nectar.shared.jobs import add_queue_upkeep, enqueue

QUEUE = "core"
RUN_TASK = "core.run_workflow"
WAKE_TASK = "core.wake_run"
blueprint = procrastinate.Blueprint()
# Upkeep: a run whose worker died is handed back (activate_run resumes it from its journal), and
# finished jobs are removed after a day.
RETRY_STALLED_TASK = add_queue_upkeep(blueprint, QUEUE)
_flask_app: Flask | None = None


def bind(app: Flask) -> None:
    """Tasks run inside this app's context (database session, settings, key ring)."""
    global _flask_app
    _flask_app = app


def queue_run(
    session,
    org_id: uuid.UUID,
    workflow_id,
    version_id,
    trigger: str,
    run_input: dict,
    *,
    key=None,
    rerun_of=None,
    definition: dict | None = None,
):
    """Records a queued run and its job in the caller's transaction; returns the run's id. A test
    run gives the `definition` it runs (a draft); others run their version's."""
    run_id = uuid.uuid4()
    session.add(
        WorkflowRun(
            id=run_id,
            org_id=org_id,
            workflow_id=workflow_id,
            version_id=version_id,
            trigger=trigger,
            status="queued",
            idempotency_key=key,
            rerun_of=rerun_of,
            input=json_safe(run_input),
            definition=definition,
        )
    )
    session.flush()
    schedule_activation(session, org_id, run_id)
    return run_id


def schedule_activation(session, org_id: uuid.UUID, run_id: uuid.UUID, at: datetime | None = None) -> None:
    """Queues the run's next activation (now, or at `at`) in the caller's transaction.

    Activations of one run share a procrastinate lock, so they never overlap, whoever queued them.
    A job waiting for its lock also holds back every later job with that lock, so a wake-up for
    later is a lock-free job of its own that queues the activation when its time comes: a timeout
    thirty days away never delays the event that arrives first."""
    args = {"org_id": str(org_id), "run_id": str(run_id)}
    if at is not None and at > datetime.now(UTC):
        enqueue(session, WAKE_TASK, args, queue=QUEUE, scheduled_at=at)
    else:
        enqueue(session, RUN_TASK, args, queue=QUEUE, lock=f"run:{run_id}")


@blueprint.task(name=WAKE_TASK, queue=QUEUE, retry=procrastinate.RetryStrategy(max_attempts=10, wait=5))
def wake_run(org_id: str, run_id: str) -> None:
    assert _flask_app is not None, "bind(app) before running the worker"
    with _flask_app.app_context():
        try:
            schedule_activation(db.session, uuid.UUID(org_id), uuid.UUID(run_id))
            db.session.commit()
        finally:
            db.session.remove()


class ActivationRetry(procrastinate.BaseRetryStrategy):
    """An activation that lost the database is retried for as long as the outage lasts (the run
    resumes from its journal); any other error a few times (a run's own failures never raise)."""

    def get_retry_decision(self, *, exception: BaseException, job) -> procrastinate.RetryDecision | None:
        if isinstance(exception, OperationalError | psycopg.OperationalError):
            return procrastinate.RetryDecision(retry_in={"seconds": min(60, 2 ** min(job.attempts, 6))})
        if job.attempts >= 5:
            return None
        return procrastinate.RetryDecision(retry_in={"seconds": 2 ** (job.attempts + 1)})


@blueprint.task(name=RUN_TASK, queue=QUEUE, retry=ActivationRetry())
def run_workflow(org_id: str, run_id: str) -> None:
    assert _flask_app is not None, "bind(app) before running the worker"
    with _flask_app.app_context():
        try:
            org, run = uuid.UUID(org_id), uuid.UUID(run_id)
            outcome = activate_run(db.session, org, run, limits=ASYNC_LIMITS)
            if outcome is not None and outcome.status == "waiting" and outcome.wake_at is not None:
                schedule_activation(db.session, org, run, outcome.wake_at)
            db.session.commit()
        finally:
            db.session.remove()


@blueprint.periodic(cron="* * * * *")
@blueprint.task(name="core.tick_schedules", queue=QUEUE, pass_context=False)
def tick_schedules(timestamp: int) -> None:
    assert _flask_app is not None, "bind(app) before running the worker"
    with _flask_app.app_context():
        try:
            start_due_runs(db.session)
        finally:
            db.session.remove()


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
        scope_session(session)
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
