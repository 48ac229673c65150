"""Reading runs back: by idempotency key, newest first with filters, one with its steps.

All functions work inside the session's tenant scope; ids from another organization are simply
not found.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from nectar.core.runs.records import jsonb_text
from nectar.core.runs.writer import run_writer
from nectar.core.workflows.expressions import json_text
from nectar.schema.models import WorkflowRun, WorkflowVersion
from nectar.shared.rejection import InputRejected


def version_of(session: Session, workflow_id: uuid.UUID, number: int | None) -> WorkflowVersion | None:
    if number is None:
        return None
    return session.scalar(
        select(WorkflowVersion).where(
            WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.version == number
        )
    )


# A saved version never changes, so each worker keeps the definitions it ran last: an activation
# then reads nothing but its run. Bounded: at most this many documents, each within the API's body limit.
DEFINITIONS_KEPT = 64
_definitions: OrderedDict[tuple[uuid.UUID, uuid.UUID], dict] = OrderedDict()
_definitions_lock = threading.Lock()


def saved_definition(session: Session, org_id: uuid.UUID, version_id: uuid.UUID) -> dict:
    """The definition of saved version `version_id` of organization `org_id` (the session's scope),
    read once per process while it is among the last DEFINITIONS_KEPT used. Callers must not change it."""
    key = (org_id, version_id)
    with _definitions_lock:
        if (definition := _definitions.get(key)) is not None:
            _definitions.move_to_end(key)
            return definition
    definition = session.scalar(select(WorkflowVersion.definition).where(WorkflowVersion.id == version_id))
    if definition is None:
        raise LookupError(f"workflow version {version_id} is not in this organization")
    with _definitions_lock:
        _definitions[key] = definition
        while len(_definitions) > DEFINITIONS_KEPT:
            _definitions.popitem(last=False)
    return definition


def run_for_key(session: Session, workflow_id: uuid.UUID, key: str) -> WorkflowRun | None:
    return session.scalar(
        select(WorkflowRun).where(WorkflowRun.workflow_id == workflow_id, WorkflowRun.idempotency_key == key)
    )


def run_to_replay(
    session: Session,
    workflow_id: uuid.UUID,
    key: str,
    run_input: dict,
    compared: tuple[str, ...] | None = None,
    *,
    trigger: str,
    rerun_of: uuid.UUID | None = None,
) -> WorkflowRun | None:
    """The run a request with Idempotency-Key `key` started before, whose answer is given again,
    or None. A key names one request: when the earlier one asked for something else (another kind
    of run, a re-run or retry of another run, another input or other `compared` fields of it),
    InputRejected (422), as the IETF Idempotency-Key draft answers; replaying it would hide that this
    request never ran. Inputs are compared as jsonb compares them (1e23 is the number it stored)."""
    earlier = run_for_key(session, workflow_id, key)
    if earlier is None:
        return None
    same_input = session.scalar(
        _SAME_JSON_SQL,
        {
            "earlier": json_text(_asked(earlier.input or {}, compared)),
            "now": jsonb_text(_asked(run_input, compared)),
        },
    )
    if not same_input or (earlier.trigger, earlier.rerun_of) != (trigger, rerun_of):
        raise InputRejected(
            "This Idempotency-Key was used for a different request; a new request needs a new key.",
            status=422,
            field="Idempotency-Key",
        )
    return earlier


_SAME_JSON_SQL = text("SELECT CAST(:earlier AS jsonb) = CAST(:now AS jsonb)")


def _asked(run_input: dict, compared: tuple[str, ...] | None) -> dict:
    return run_input if compared is None else {name: run_input.get(name) for name in compared}


def list_runs(
    session: Session,
    *,
    workflow_id: uuid.UUID | None = None,
    status: str | None = None,
    trigger: str | None = None,
    limit: int = 50,
    before: datetime | None = None,
) -> list[WorkflowRun]:
    """Newest first, filtered; `before` (the last queued_at seen) pages without OFFSET."""
    _runs_written(session)
    statement = select(WorkflowRun).order_by(WorkflowRun.queued_at.desc(), WorkflowRun.id).limit(limit)
    if workflow_id:
        statement = statement.where(WorkflowRun.workflow_id == workflow_id)
    if status:
        statement = statement.where(WorkflowRun.status == status)
    if trigger:
        statement = statement.where(WorkflowRun.trigger == trigger)
    if before:
        statement = statement.where(WorkflowRun.queued_at < before)
    return list(session.scalars(statement))


def get_run(session: Session, run_id: uuid.UUID) -> WorkflowRun:
    """The run; its `steps` in order (step_id, step_type, position, attempt, status, input, output,
    error, started_at and finished_at as ISO 8601 text)."""
    _runs_written(session)
    run = session.get(WorkflowRun, run_id)
    if run is None:
        raise LookupError("no such run")
    return run


def _runs_written(session: Session) -> None:
    """Endpoint calls' runs are written just after their answer (writer.py): reads wait for those
    this process has handed over, so a caller reading its run back finds it."""
    run_writer(session.get_bind()).flush()
