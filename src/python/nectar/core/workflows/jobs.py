"""Core's background jobs: asynchronous workflow runs (manual, scheduled, re-runs) and the
scheduler that turns cron triggers into runs. Run by `core.pex worker`.

Runs are shared out fairly between organizations. An organization's Nth waiting run is queued
with priority -N, so workers take every organization's first waiting run before anyone's second:
a thousand queued runs of one organization delay another's by one run each, at most. And its runs
go round ORG_MAX_WORKER_RUNS procrastinate locks (jobs with one lock run one at a time), so it
holds at most that many of all workers' slots (WORKER_CONCURRENCY each); the rest stay free for
other organizations however long its runs take.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import procrastinate
from croniter import croniter
from flask import Flask, current_app
from sqlalchemy import select, text, update

from nectar.core.workflows.engine import ASYNC_LIMITS
from nectar.core.workflows.expressions import json_safe
from nectar.core.workflows.runner import run_queued
from nectar.schema.models import Workflow, WorkflowRun, WorkflowSchedule
from nectar.shared.database import db, scope_session
from nectar.shared.jobs import add_queue_upkeep, enqueue

QUEUE = "core"
RUN_TASK = "core.run_workflow"
MOST_WAITING_COUNTED = 10_000  # past it, an organization's runs are all last alike
_WAITING_RUNS = text(
    "SELECT count(*) FROM (SELECT 1 FROM workflow_runs WHERE org_id = :org_id AND status = 'queued' LIMIT :most) w"
)
blueprint = procrastinate.Blueprint()
# Upkeep: a run whose worker died is handed back (run_queued then records it failed, as it is not
# safe to redo), and finished jobs are removed after a day.
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
):
    """Records a queued run and its job in the caller's transaction; returns the run's id. The job
    waits behind the organization's runs already waiting (see the module's docstring)."""
    waiting = session.scalar(_WAITING_RUNS, {"org_id": org_id, "most": MOST_WAITING_COUNTED})
    lanes = current_app.config["NECTAR_SETTINGS"].org_max_worker_runs
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
        )
    )
    session.flush()
    enqueue(
        session,
        RUN_TASK,
        {"org_id": str(org_id), "run_id": str(run_id)},
        queue=QUEUE,
        priority=-waiting,
        lock=f"{RUN_TASK}:{org_id}:{waiting % lanes}",
    )
    return run_id


@blueprint.task(
    name=RUN_TASK, queue=QUEUE, retry=procrastinate.RetryStrategy(max_attempts=5, exponential_wait=2)
)
def run_workflow(org_id: str, run_id: str) -> None:
    assert _flask_app is not None, "bind(app) before running the worker"
    with _flask_app.app_context():
        try:
            run_queued(db.session, uuid.UUID(org_id), uuid.UUID(run_id), limits=ASYNC_LIMITS)
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
