"""What people and outside systems send to durable runs: events (through the API or a step's resume
URL) and decisions on approval steps. Each is stored in the caller's transaction and wakes the run
if it waits for it; the run's inbox (inbox.py) hands it to the step.

Both lock the run's row first, as activating a run does (runner.activate_run), so a signal either
comes before an activation, which then sees it, or during one, and then queues the next.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Request
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from nectar.core.access import ROLE_RANK, PermissionDenied
from nectar.core.runs.queue import schedule_activation
from nectar.core.runs.records import FINAL_STATUSES
from nectar.core.workflows.definition import EVENT_NAME_PATTERN
from nectar.core.workflows.expressions import ExpressionError, check_size, json_safe
from nectar.schema.models import (
    User,
    Workflow,
    WorkflowApproval,
    WorkflowRun,
    WorkflowRunCheckpoint,
    WorkflowRunEvent,
)

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_UNTAKEN_EVENTS = 100  # per run: events no step has taken yet
MAX_COMMENT_CHARS = 2000
DECISIONS = ("approved", "rejected")
_EVENT_NAME = re.compile(EVENT_NAME_PATTERN)


class Refused(Exception):
    """What was asked of a run cannot be done: `status` is the HTTP status that says why (409 it
    has ended, 410 too late, ...), `detail` says it for people."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def check_event_name(name: str) -> str:
    if not _EVENT_NAME.fullmatch(name):  # fullmatch: "$" alone would let a trailing newline through
        raise Refused(
            422, "An event name is 1 to 100 letters, digits and _ . : - (starting with a letter or digit)."
        )
    return name


def event_payload(request: Request) -> Any:
    """The payload of an event request, checked at the edge: JSON (strict: no NaN, no lone
    surrogates), a form's fields, or nothing (null); at most 64 KiB, 100 levels deep, no NUL."""
    if request.content_length is not None and request.content_length > MAX_PAYLOAD_BYTES:
        raise Refused(413, f"An event's payload is at most {MAX_PAYLOAD_BYTES // 1024} KiB.")
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        if request.files:
            raise Refused(400, "An event carries JSON or form fields, not files.")
        payload: Any = request.form.to_dict()
    else:
        raw = request.get_data(cache=False)
        if len(raw) > MAX_PAYLOAD_BYTES:
            raise Refused(413, f"An event's payload is at most {MAX_PAYLOAD_BYTES // 1024} KiB.")
        if not raw.strip():
            return None
        if request.mimetype not in ("application/json", ""):
            raise Refused(415, "Send the payload as application/json (or form fields).")
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise Refused(400, f"The payload is not JSON: {error}") from None
    try:
        check_size(payload, "the payload")
    except ExpressionError as error:
        raise Refused(422, str(error)) from None
    if json_safe(payload) != payload:
        raise Refused(422, "The payload holds a NUL character, which no text may hold.")
    return payload


def deliver_event(
    session: Session,
    org_id: uuid.UUID,
    run_id: uuid.UUID,
    name: str,
    payload: Any,
    *,
    step_key: str | None = None,
) -> WorkflowRunEvent:
    """Stores event `name` for the run (for step `step_key` only: a resume URL's) and wakes the
    run if it waits for it. LookupError for a run not in the session's organization;
    Refused when the run has ended (409), the step no longer waits (409, 410), or the run
    has too many events it has not taken (429)."""
    run = _locked_run(session, run_id)
    if step_key is not None:
        _check_still_waits(session, run, step_key)
    untaken = session.scalar(
        select(func.count())
        .select_from(WorkflowRunEvent)
        .where(WorkflowRunEvent.run_id == run_id, WorkflowRunEvent.taken_by.is_(None))
    )
    if untaken >= MAX_UNTAKEN_EVENTS:
        raise Refused(429, f"The run holds {untaken} events no step has taken yet; that is the limit.")
    event = WorkflowRunEvent(
        org_id=org_id,
        run_id=run_id,
        name=name,
        step_key=step_key,
        payload=payload,
        source="api" if step_key is None else "resume_url",
    )
    session.add(event)
    session.flush()
    # An activation under way (a queued run shows running only once a step takes time) may have
    # looked for events already: the next one takes it. A waiting run may wait for it in any branch
    # of a parallel step; a replay costs less than a lost event.
    schedule_activation(session, org_id, run_id)
    return event


def _locked_run(session: Session, run_id: uuid.UUID) -> WorkflowRun:
    run = session.scalar(select(WorkflowRun).where(WorkflowRun.id == run_id).with_for_update())
    if run is None:
        raise LookupError("no such run")
    if run.status in FINAL_STATUSES:
        raise Refused(409, f"The run has ended ({run.status}); it takes nothing more.")
    return run


def _check_still_waits(session: Session, run: WorkflowRun, step_key: str) -> None:
    """A resume URL's step must not have stopped waiting, nor have an event sent already."""
    checkpoint = session.get(WorkflowRunCheckpoint, (run.org_id, run.id, step_key))
    if checkpoint is not None and checkpoint.status != "waiting":
        if checkpoint.output and checkpoint.output.get("timed_out"):
            raise Refused(410, "The step stopped waiting: its time ran out.")
        raise Refused(409, "The step has already been resumed.")
    if checkpoint is not None and datetime.fromisoformat(checkpoint.output["until"]) <= datetime.now(UTC):
        raise Refused(410, "The step stopped waiting: its time ran out.")
    sent = session.scalar(
        select(WorkflowRunEvent.id).where(
            WorkflowRunEvent.run_id == run.id,
            WorkflowRunEvent.step_key == step_key,
            WorkflowRunEvent.taken_by.is_(None),
        )
    )
    if sent is not None:
        raise Refused(409, "An event was sent to this step already; it is taken when the run gets there.")


def pending_approvals(
    session: Session, limit: int = 200
) -> list[tuple[WorkflowApproval, WorkflowRun, Workflow]]:
    """The organization's approvals that wait for a decision, oldest first, with their run and workflow."""
    return list(
        session.execute(
            select(WorkflowApproval, WorkflowRun, Workflow)
            .join(WorkflowRun, WorkflowRun.id == WorkflowApproval.run_id)
            .join(Workflow, Workflow.id == WorkflowRun.workflow_id)
            .where(
                WorkflowApproval.decision.is_(None),
                WorkflowApproval.closed_at.is_(None),
                WorkflowApproval.expires_at > func.now(),
                WorkflowRun.status.not_in(FINAL_STATUSES),
            )
            .order_by(WorkflowApproval.requested_at, WorkflowApproval.id)
            .limit(limit)
        ).tuples()
    )


def decide(
    session: Session,
    approval: WorkflowApproval,
    user: User,
    role: str,
    decision: str,
    comment: str | None,
) -> WorkflowApproval:
    """Records `user`'s decision (holding `role` in the approval's organization) and wakes the run.
    PermissionDenied without the approver role; Refused when the decision or comment is
    not valid (422), it was decided already or the run has ended (409), or the time to decide
    has passed (410)."""
    if ROLE_RANK[role] < ROLE_RANK[approval.approver_role]:
        raise PermissionDenied(
            f"Deciding this needs the {approval.approver_role} role or above; yours is {role}."
        )
    if decision not in DECISIONS:
        raise Refused(422, "The decision is approved or rejected.")
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT_CHARS or "\x00" in comment:
        raise Refused(422, f"A comment is at most {MAX_COMMENT_CHARS} characters of text.")
    _locked_run(session, approval.run_id)
    decided = session.scalar(
        update(WorkflowApproval)
        .where(
            WorkflowApproval.id == approval.id,
            WorkflowApproval.decision.is_(None),
            WorkflowApproval.closed_at.is_(None),
            WorkflowApproval.expires_at > func.now(),
        )
        .values(
            decision=decision,
            decided_by=user.id,
            decided_by_email=user.email,
            decided_at=func.now(),
            comment=comment or None,
        )
        .returning(WorkflowApproval.id)
    )
    session.refresh(approval)
    if decided is None:
        if approval.decision is not None:
            raise Refused(409, f"This was {approval.decision} already, by {approval.decided_by_email}.")
        raise Refused(410, "The time to decide has passed.")
    schedule_activation(session, approval.org_id, approval.run_id)
    return approval
