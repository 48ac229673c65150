"""Recovering runs: retrying a failed run from the step that failed it, and cancelling a run that
has not ended.

A retry is a new run (trigger `retry`, `rerun_of` the failed one) whose journal starts as a copy
of the failed run's finished checkpoints, all but the failed step's. It replays the steps before
that one from their checkpoints, so no request or email of theirs is repeated, and does the failed
step again. A new run rather than the same one again: the failed run stays as it happened, the
new run's trace shows the kept steps (with their first times) and what the retry did, and its
effects get new idempotency keys (a target that cached the failed request's answer would
otherwise give it again).
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from nectar.core.runs.calls import wake_caller
from nectar.core.runs.queue import queue_run
from nectar.core.runs.records import FINAL_STATUSES, TEST_TRIGGER
from nectar.core.runs.signals import Refused
from nectar.schema.models import WorkflowRun, WorkflowVersion

# Waiting checkpoints are left out: a wait the failed run had begun begins again. So are the
# failed step's and the failures under it (in its loop iterations): they are done again.
_SEED_JOURNAL_SQL = text(
    "INSERT INTO workflow_run_checkpoints (org_id, run_id, step_key, status, output, error, record) "
    "SELECT org_id, :new_run, step_key, status, output, error, record FROM workflow_run_checkpoints "
    "WHERE run_id = :failed_run AND status <> 'waiting' AND step_key <> :failed_step "
    "AND (status = 'succeeded' OR (:failed_step <> '' "
    "AND left(step_key, length(:failed_step) + 1) <> :failed_step || '['))"
)


def retry_run(
    session: Session,
    run: WorkflowRun,
    version: WorkflowVersion,
    *,
    as_test: bool = False,
    key: str | None = None,
) -> uuid.UUID:
    """Queues the retry of failed `run` on `version` (its own or the workflow's current one) in the
    caller's transaction, under Idempotency-Key `key` if given; returns the new run's id. Refused
    (409) unless the run failed.

    On another version, a step keeps its recorded outcome if its id is the same. A run that
    failed without naming its step (it failed before runs recorded that) keeps only the steps that
    succeeded."""
    if run.status != "failed":
        raise Refused(409, f"Only a failed run can be retried; this one is {run.status}.")
    failed_step = (run.output or {}).get("failed_step") or ""
    draft = run.definition if retry_trigger(run, as_test) == TEST_TRIGGER else None
    new_id = queue_run(
        session,
        run.org_id,
        run.workflow_id,
        version.id,
        retry_trigger(run, as_test),
        run.input or {},
        key=key,
        rerun_of=run.id,
        definition=draft,
    )
    session.execute(_SEED_JOURNAL_SQL, {"new_run": new_id, "failed_run": run.id, "failed_step": failed_step})
    return new_id


def retry_trigger(run: WorkflowRun, as_test: bool) -> str:
    """What a retry of `run` is: a test run retried as it was (`as_test`) runs the same draft and is
    a test again; any other is a retry."""
    return TEST_TRIGGER if as_test and run.trigger == TEST_TRIGGER else "retry"


def cancel_run(session: Session, run_id: uuid.UUID, cancelled_by: str) -> WorkflowRun:
    """Cancels a queued, waiting or running run in the caller's transaction. It ends at once; a
    running one's worker stops it before its next step that acts or waits. Refused (409)
    for a run that has ended."""
    run = session.scalar(select(WorkflowRun).where(WorkflowRun.id == run_id).with_for_update())
    if run is None:
        raise LookupError("no such run")
    if run.status in FINAL_STATUSES:
        raise Refused(409, f"The run has ended ({run.status}); there is nothing to cancel.")
    _end_cancelled(run, f"Cancelled by {cancelled_by}.")
    session.flush()
    if run.parent_run_id is not None:  # a caller waiting for this run must learn that it ended
        wake_caller(session, run.org_id, run.id)
    _cancel_called_runs(session, run.id)
    session.refresh(run)
    return run


def _end_cancelled(run: WorkflowRun, why: str) -> None:
    waited_for = run.waiting_for
    run.status, run.error = "cancelled", why[:2000]
    if waited_for:
        run.error += f" It was waiting for {_describe(waited_for)}."
    run.finished_at, run.wake_at, run.waiting_for = func.now(), None, None


def _cancel_called_runs(session: Session, caller_id: uuid.UUID) -> None:
    """The runs a cancelled run called and that have not ended stop too (and theirs, at most
    MAX_CALL_DEPTH deep): their work was for it."""
    called = session.scalars(
        select(WorkflowRun)
        .where(WorkflowRun.parent_run_id == caller_id, WorkflowRun.status.not_in(FINAL_STATUSES))
        .with_for_update()
    ).all()
    for run in called:
        _end_cancelled(run, f"Cancelled with the run that called it ({caller_id}).")
        session.flush()
        _cancel_called_runs(session, run.id)


def _describe(waiting_for: dict) -> str:
    kind = waiting_for.get("type")
    if kind == "event":
        return f"the event {waiting_for.get('event')!r} at step {waiting_for.get('key')!r}"
    if kind == "approval":
        return f"an approval at step {waiting_for.get('key')!r}"
    return f"its {kind} step {waiting_for.get('step')!r}"
