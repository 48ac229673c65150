"""Workflows in the database: versions (every save is a new version), runs and their step records.

All functions work inside the session's tenant scope; ids from another organization are simply
not found.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nectar.core.access import OrgContext, PermissionDenied
from nectar.core.workflows.definition import Problem, validate
from nectar.core.workflows.engine import RunOutcome
from nectar.core.workflows.expressions import json_safe, json_text
from nectar.schema.models import Workflow, WorkflowRun, WorkflowVersion
from nectar.shared.bad_input import BadInput


class InvalidWorkflow(Exception):
    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))
        self.problems = problems


def _require_editor(ctx: OrgContext) -> None:
    if not ctx.at_least("admin"):
        raise PermissionDenied("Only an admin or owner can change workflows.")


def create_workflow(
    session: Session, ctx: OrgContext, user_id, name: str, definition: dict, description=None
) -> Workflow:
    _require_editor(ctx)
    name = (name or "").strip()
    if not 1 <= len(name) <= 200:
        raise InvalidWorkflow([Problem("/name", "Use 1 to 200 characters.")])
    problems = validate(definition)
    if problems:
        raise InvalidWorkflow(problems)
    workflow = Workflow(
        id=uuid.uuid4(), org_id=ctx.org_id, name=name, description=description, created_by=user_id
    )
    session.add(workflow)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise InvalidWorkflow([Problem("/name", f"A workflow named {name!r} exists already.")]) from None
    save_version(session, ctx, workflow, definition, user_id, note="first version")
    return workflow


def save_version(
    session: Session, ctx: OrgContext, workflow: Workflow, definition: dict, user_id, note=None
) -> WorkflowVersion:
    """Validates and stores `definition` as the next version, which becomes the current one."""
    _require_editor(ctx)
    problems = validate(definition)
    if problems:
        raise InvalidWorkflow(problems)
    number = (
        session.scalar(
            select(func.max(WorkflowVersion.version)).where(WorkflowVersion.workflow_id == workflow.id)
        )
        or 0
    ) + 1
    version = WorkflowVersion(
        id=uuid.uuid4(),
        org_id=ctx.org_id,
        workflow_id=workflow.id,
        version=number,
        definition=definition,
        note=(note or "")[:500] or None,
        created_by=user_id,
    )
    session.add(version)
    workflow.current_version = number
    workflow.updated_at = datetime.now(UTC)
    session.flush()
    from nectar.core.workflows.jobs import sync_schedule

    sync_schedule(session, workflow, definition)
    session.flush()
    return version


def roll_back(
    session: Session, ctx: OrgContext, workflow: Workflow, to_version: int, user_id
) -> WorkflowVersion:
    """Makes an older version current again, as a new version (history only grows)."""
    old = version_of(session, workflow.id, to_version)
    if old is None:
        raise LookupError("no such version")
    return save_version(
        session, ctx, workflow, old.definition, user_id, note=f"rolled back to version {to_version}"
    )


def get_workflow(session: Session, workflow_id: uuid.UUID) -> Workflow:
    workflow = session.get(Workflow, workflow_id)
    if workflow is None:
        raise LookupError("no such workflow")
    return workflow


def list_workflows(session: Session) -> list[Workflow]:
    return list(session.scalars(select(Workflow).order_by(Workflow.name)))


def versions(session: Session, workflow_id: uuid.UUID) -> list[WorkflowVersion]:
    return list(
        session.scalars(
            select(WorkflowVersion)
            .where(WorkflowVersion.workflow_id == workflow_id)
            .order_by(WorkflowVersion.version.desc())
        )
    )


def version_of(session: Session, workflow_id: uuid.UUID, number: int | None) -> WorkflowVersion | None:
    if number is None:
        return None
    return session.scalar(
        select(WorkflowVersion).where(
            WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.version == number
        )
    )


# --- runs ------------------------------------------------------------------------------------------


IDEMPOTENCY_KEY_MAX = 200  # what workflow_runs.idempotency_key holds


def checked_idempotency_key(key: str | None) -> str | None:
    """An Idempotency-Key header's value, or BadInput (400) when it is longer than a run keeps."""
    if key is not None and len(key) > IDEMPOTENCY_KEY_MAX:
        raise BadInput(
            f"Idempotency-Key is at most {IDEMPOTENCY_KEY_MAX} characters.", field="Idempotency-Key"
        )
    return key


@dataclass(frozen=True)
class RunRequest:
    workflow_id: uuid.UUID
    version_id: uuid.UUID
    trigger: str
    input: dict
    idempotency_key: str | None = None
    rerun_of: uuid.UUID | None = None


def _dumps(value) -> str:
    """JSON for a jsonb parameter. jsonb refuses NUL characters; json_safe's slower walk drops them
    only when the text shows one."""
    text = json_text(value)
    return json_text(json_safe(value)) if "\\u0000" in text else text


@dataclass(frozen=True)
class FinishedRun:
    """A run that has been executed and waits to be recorded."""

    id: uuid.UUID
    org_id: uuid.UUID
    request: RunRequest
    outcome: RunOutcome


def _run_row(run: FinishedRun) -> dict:
    request = run.request
    return {
        "id": run.id,
        "org_id": run.org_id,
        "workflow_id": request.workflow_id,
        "version_id": request.version_id,
        "trigger": request.trigger,
        "idempotency_key": request.idempotency_key,
        "rerun_of": request.rerun_of,
        "input": request.input,
        **_outcome_row(run.outcome),
    }


def _outcome_row(outcome: RunOutcome) -> dict:
    output = {"output": outcome.output}
    if (response := outcome.response) is not None:
        output["response"] = {"status": response.status, "headers": response.headers, "body": response.body}
    return {
        "status": outcome.status,
        "output": output,
        "error": outcome.error,
        "started_at": outcome.started_at,
        "finished_at": outcome.finished_at,
        "duration_ms": outcome.duration_ms,
        "steps": [
            {
                "step_id": s.step_id,
                "step_type": s.step_type,
                "position": s.position,
                "attempt": s.attempt,
                "status": s.status,
                "input": s.input,
                "output": s.output,
                "error": s.error,
                "started_at": s.started_at,
                "finished_at": s.finished_at,
            }
            for s in outcome.steps
        ],
    }


_OUTCOME_FIELDS = (
    "status text, output jsonb, error text, started_at timestamptz, finished_at timestamptz, duration_ms int, "
    "steps jsonb"
)

# One statement writes any number of runs of one organization, their steps included, and counts
# them for the plan's rate limit when given a bucket (endpoint calls). In psycopg's parameter style,
# as the endpoint hot path binds it on a raw connection.
RECORD_RUNS_SQL = f"""
    WITH counted AS (
        INSERT INTO rate_limit_buckets (key, window_start, count)
        SELECT CAST(%(rate_key)s AS text), CAST(%(rate_window)s AS bigint), CAST(%(rate_count)s AS int)
        WHERE CAST(%(rate_key)s AS text) IS NOT NULL
        ON CONFLICT (key, window_start) DO UPDATE SET count = rate_limit_buckets.count + EXCLUDED.count
    )
    INSERT INTO workflow_runs (id, org_id, workflow_id, version_id, trigger, status, idempotency_key, rerun_of,
                               input, output, error, queued_at, started_at, finished_at, duration_ms, steps)
    SELECT r.id, r.org_id, r.workflow_id, r.version_id, r.trigger, r.status, r.idempotency_key, r.rerun_of,
           r.input, r.output, r.error, r.started_at, r.started_at, r.finished_at, r.duration_ms, r.steps
    FROM jsonb_to_recordset(CAST(%(runs)s AS jsonb)) AS r(id uuid, org_id uuid, workflow_id uuid,
         version_id uuid, trigger text, idempotency_key text, rerun_of uuid, input jsonb, {_OUTCOME_FIELDS})
"""  # noqa: S608 - only the constant column list is filled in


def run_record_json(run: FinishedRun) -> str:
    """A run as RECORD_RUNS_SQL reads it, in JSON. The endpoint hot path makes it as soon as the
    call is answered, so what waits to be written is one string, not the run's objects."""
    return _dumps(_run_row(run))


def record_runs_params(record_jsons: list[str], rate_bucket: tuple[str, int] | None = None) -> dict:
    """RECORD_RUNS_SQL's parameters for runs of one organization (each from run_record_json), counting them
    in `rate_bucket`."""
    rate_key, rate_window = rate_bucket or (None, None)
    return {
        "rate_key": rate_key,
        "rate_window": rate_window,
        "rate_count": len(record_jsons),
        "runs": f"[{','.join(record_jsons)}]",
    }


def record_run(
    session: Session,
    org_id: uuid.UUID,
    request: RunRequest,
    outcome: RunOutcome,
    rate_bucket: tuple[str, int] | None = None,
) -> uuid.UUID:
    run = FinishedRun(uuid.uuid4(), org_id, request, outcome)
    session.connection().exec_driver_sql(
        RECORD_RUNS_SQL, record_runs_params([run_record_json(run)], rate_bucket)
    )
    return run.id


_COMPLETE_RUN_SQL = f"""
    UPDATE workflow_runs SET status = r.status, output = r.output, error = r.error, started_at = r.started_at,
           finished_at = r.finished_at, duration_ms = r.duration_ms, steps = r.steps
    FROM jsonb_to_record(CAST(%(outcome)s AS jsonb)) AS r({_OUTCOME_FIELDS})
    WHERE id = %(id)s
"""  # noqa: S608 - only the constant column list is filled in


def complete_run(session: Session, run_id: uuid.UUID, outcome: RunOutcome) -> None:
    """Writes a queued run's outcome and steps in one statement."""
    session.connection().exec_driver_sql(
        _COMPLETE_RUN_SQL, {"id": run_id, "outcome": _dumps(_outcome_row(outcome))}
    )


def run_for_key(session: Session, workflow_id: uuid.UUID, key: str) -> WorkflowRun | None:
    return session.scalar(
        select(WorkflowRun).where(WorkflowRun.workflow_id == workflow_id, WorkflowRun.idempotency_key == key)
    )


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
    """Endpoint calls' runs are written just after their answer (endpoints/recorder.py): reads wait
    for those this process has handed over, so a caller reading its run back finds it."""
    from nectar.core.endpoints.recorder import run_writer

    run_writer(session.get_bind()).flush()
