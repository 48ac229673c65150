"""Runs that call other workflows (call_workflow steps): finding the called workflow, queueing its
run as the caller's child, reading how it ended, and waking a caller that waits for it.

A caller that waits journals the child's id in a `waiting` checkpoint, in the transaction that
queues the child, so the child can never end before its caller's journal names it. When the
child ends, whoever ends it (an activation, a cancellation) calls `wake_caller` in the same
transaction: the caller's next activation replays up to the call and reads the child's end.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from nectar.core.runs.queries import version_of
from nectar.core.runs.queue import QueueFull, queue_run, schedule_activation
from nectar.core.runs.records import FINAL_STATUSES, SILENT_TRIGGERS
from nectar.core.workflows.definition import MAX_CALL_DEPTH
from nectar.core.workflows.engine import RunStopped, StepFailed
from nectar.schema.models import Workflow, WorkflowRun


@dataclass(frozen=True)
class Caller:
    """The run whose steps call: its organization, its id, how deeply it was called itself, and its
    trigger."""

    org_id: uuid.UUID
    run_id: uuid.UUID
    depth: int = 0
    trigger: str = "call"


def find_workflow(session: Session, ref: str) -> Workflow | None:
    """The organization's workflow named by `ref`: its id, or else its name."""
    try:
        by_id = session.get(Workflow, uuid.UUID(ref))
    except ValueError:
        by_id = None
    return by_id or session.scalar(select(Workflow).where(Workflow.name == ref))


def start_called_run(session: Session, caller: Caller, ref: str, run_input: dict, key: str | None) -> str:
    """Queues a run of the current version of workflow `ref` as `caller`'s child, in the session's
    transaction, and returns its id; with `key` (the calling step's effect key), the child queued
    under it before, if any."""
    if caller.depth >= MAX_CALL_DEPTH:
        raise RunStopped(
            f"workflow calls nest at most {MAX_CALL_DEPTH} deep; this run is called {caller.depth} deep"
        )
    workflow = find_workflow(session, ref)
    if workflow is None or not workflow.is_active or workflow.current_version is None:
        raise StepFailed(f"no active workflow {ref!r} in this organization")
    idempotency_key = f"call:{key}" if key else None
    if idempotency_key is not None:
        earlier = session.scalar(
            select(WorkflowRun.id).where(
                WorkflowRun.workflow_id == workflow.id,
                WorkflowRun.idempotency_key == idempotency_key,
                WorkflowRun.parent_run_id == caller.run_id,  # only the caller's own child
            )
        )
        if earlier is not None:
            return str(earlier)
    version_id = version_of(session, workflow.id, workflow.current_version).id
    try:
        run_id = queue_run(
            session,
            caller.org_id,
            workflow.id,
            version_id,
            # A test's or an alert's calls are part of it: they count as no usage and alert no one either.
            caller.trigger if caller.trigger in SILENT_TRIGGERS else "call",
            run_input,
            key=idempotency_key,
            parent_run_id=caller.run_id,
            call_depth=caller.depth + 1,
        )
    except QueueFull as full:  # the calling step fails, and its on_error says what follows
        raise StepFailed(str(full)) from None
    return str(run_id)


def called_run_result(session: Session, run_id: str) -> dict | None:
    """How a called run ended ({"status", "output", "error"}), or None while it has not."""
    row = session.execute(
        select(WorkflowRun.status, WorkflowRun.output, WorkflowRun.error).where(
            WorkflowRun.id == uuid.UUID(run_id)
        )
    ).one_or_none()
    if row is None:
        return {"status": "removed", "output": None, "error": "the called run no longer exists"}
    if row.status not in FINAL_STATUSES:
        return None
    return {"status": row.status, "output": (row.output or {}).get("output"), "error": row.error}


# The caller, if a checkpoint of it still waits for this run (a call that waits for its output).
_WAITING_CALLER_SQL = text(
    "SELECT r.parent_run_id FROM workflow_runs r "
    "JOIN workflow_run_checkpoints c ON c.org_id = r.org_id AND c.run_id = r.parent_run_id "
    "WHERE r.id = :run_id AND c.status = 'waiting' AND c.output ->> 'run_id' = :run_text LIMIT 1"
)


def wake_caller(session: Session, org_id: uuid.UUID, run_id: uuid.UUID) -> None:
    """Run `run_id` has ended: queues the activation of the run that waits for its output, if one
    does, in the session's transaction."""
    caller = session.scalar(_WAITING_CALLER_SQL, {"run_id": run_id, "run_text": str(run_id)})
    if caller is not None:
        schedule_activation(session, org_id, caller)
