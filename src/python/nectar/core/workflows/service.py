"""Workflows in the database: versions (every save is a new version), runs and their step records.

All functions work inside the session's tenant scope; ids from another organization are simply
not found.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nectar.core.access import OrgContext, PermissionDenied
from nectar.core.workflows.definition import Problem, validate
from nectar.core.workflows.engine import RunOutcome
from nectar.schema.models import StepRun, Workflow, WorkflowRun, WorkflowVersion


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


@dataclass(frozen=True)
class RunRequest:
    workflow_id: uuid.UUID
    version_id: uuid.UUID
    trigger: str
    input: dict
    idempotency_key: str | None = None
    rerun_of: uuid.UUID | None = None


def json_safe(value):
    """What jsonb can store: NaN and infinities become null, NUL characters are dropped."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _dumps(value) -> str:
    return json.dumps(json_safe(value), default=str, allow_nan=False)


def _steps_json(outcome: RunOutcome) -> str:
    return _dumps(
        [
            {
                "step_id": s.step_id,
                "step_type": s.step_type,
                "position": s.position,
                "attempt": s.attempt,
                "status": s.status,
                "input": s.input,
                "output": s.output,
                "error": s.error,
                "started_at": s.started_at.isoformat(),
                "finished_at": s.finished_at.isoformat(),
            }
            for s in outcome.steps
        ]
    )


def _output_json(outcome: RunOutcome) -> str:
    response = outcome.response
    body = {"output": outcome.output}
    if response is not None:
        body["response"] = {"status": response.status, "headers": response.headers, "body": response.body}
    return _dumps(body)


# The steps of the run the statement's `run` CTE wrote or updated, from one JSON array.
_INSERT_STEPS = """
    INSERT INTO step_runs (org_id, run_id, step_id, step_type, position, attempt, status, input, output, error,
                           started_at, finished_at)
    SELECT run.org_id, run.id, s.step_id, s.step_type, s.position, s.attempt, s.status, s.input, s.output, s.error,
           s.started_at, s.finished_at
    FROM run, jsonb_to_recordset(CAST(%(steps)s AS jsonb)) AS s(step_id text, step_type text, position int,
         attempt int, status text, input jsonb, output jsonb, error text, started_at timestamptz, finished_at timestamptz)
"""

# One statement writes the run and all its steps: one round trip, whatever the step count. It
# also counts the call for the plan's rate limit when given a bucket (endpoint calls). In
# psycopg's parameter style, as the endpoint hot path sends it on a raw connection.
RECORD_RUN_SQL = "".join(  # a constant head and the shared steps statement
    (
        """
    WITH counted AS (
        INSERT INTO rate_limit_buckets (key, window_start, count)
        SELECT CAST(%(rate_key)s AS text), CAST(%(rate_window)s AS bigint), 1 WHERE CAST(%(rate_key)s AS text) IS NOT NULL
        ON CONFLICT (key, window_start) DO UPDATE SET count = rate_limit_buckets.count + 1
    ),
    run AS (
        INSERT INTO workflow_runs (id, org_id, workflow_id, version_id, trigger, status, idempotency_key, rerun_of,
                                   input, output, error, queued_at, started_at, finished_at, duration_ms)
        VALUES (%(id)s, %(org_id)s, %(workflow_id)s, %(version_id)s, %(trigger)s, %(status)s, %(idempotency_key)s,
                %(rerun_of)s, CAST(%(input)s AS jsonb), CAST(%(output)s AS jsonb), %(error)s, %(started_at)s,
                %(started_at)s, %(finished_at)s, %(duration_ms)s)
        RETURNING id, org_id
    )
""",
        _INSERT_STEPS,
    )
)


def _outcome_params(outcome: RunOutcome) -> dict:
    return {
        "status": outcome.status,
        "output": _output_json(outcome),
        "error": json_safe(outcome.error),
        "started_at": outcome.started_at,
        "finished_at": outcome.finished_at,
        "duration_ms": outcome.duration_ms,
        "steps": _steps_json(outcome),
    }


def record_run_params(
    org_id: uuid.UUID, request: RunRequest, outcome: RunOutcome, rate_bucket: tuple[str, int] | None = None
) -> dict:
    rate_key, rate_window = rate_bucket or (None, None)
    return {
        "rate_key": rate_key,
        "rate_window": rate_window,
        "id": uuid.uuid4(),
        "org_id": org_id,
        "workflow_id": request.workflow_id,
        "version_id": request.version_id,
        "trigger": request.trigger,
        "idempotency_key": request.idempotency_key,
        "rerun_of": request.rerun_of,
        "input": _dumps(request.input),
        **_outcome_params(outcome),
    }


def record_run(
    session: Session,
    org_id: uuid.UUID,
    request: RunRequest,
    outcome: RunOutcome,
    rate_bucket: tuple[str, int] | None = None,
) -> uuid.UUID:
    params = record_run_params(org_id, request, outcome, rate_bucket)
    session.connection().exec_driver_sql(RECORD_RUN_SQL, params)
    return params["id"]


_COMPLETE_RUN_SQL = "".join(  # a constant head and the shared steps statement
    (
        """
    WITH run AS (
        UPDATE workflow_runs SET status = %(status)s, output = CAST(%(output)s AS jsonb), error = %(error)s,
               started_at = %(started_at)s, finished_at = %(finished_at)s, duration_ms = %(duration_ms)s
        WHERE id = %(id)s RETURNING id, org_id
    )
""",
        _INSERT_STEPS,
    )
)


def complete_run(session: Session, run_id: uuid.UUID, outcome: RunOutcome) -> None:
    """Writes a queued run's outcome and steps in one statement."""
    session.connection().exec_driver_sql(_COMPLETE_RUN_SQL, {"id": run_id, **_outcome_params(outcome)})


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


def get_run(session: Session, run_id: uuid.UUID) -> tuple[WorkflowRun, list[StepRun]]:
    run = session.get(WorkflowRun, run_id)
    if run is None:
        raise LookupError("no such run")
    steps = list(session.scalars(select(StepRun).where(StepRun.run_id == run_id).order_by(StepRun.position)))
    return run, steps
