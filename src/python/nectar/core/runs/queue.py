"""Putting asynchronous runs on core's queue: a queued run with its first activation, and the
activations that follow (jobs.py holds the tasks that run them)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from nectar.core.workflows.expressions import json_safe
from nectar.schema.models import WorkflowRun
from nectar.shared.jobs import enqueue

QUEUE = "core"
RUN_TASK = "core.run_workflow"
WAKE_TASK = "core.wake_run"


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
    parent_run_id=None,
    call_depth: int = 0,
):
    """Records a queued run and its job in the caller's transaction; returns the run's id. A run
    called by another one names it (`parent_run_id`) and how deeply calls are nested."""
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
            parent_run_id=parent_run_id,
            call_depth=call_depth,
            input=json_safe(run_input),
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
