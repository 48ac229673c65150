"""Workflows as their organization edits them: each save is a new version, and the newest is the
one that runs (schedules follow it).

All functions work inside the session's tenant scope; ids from another organization are simply
not found.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nectar.core.access import OrgContext, PermissionDenied
from nectar.core.runs.jobs import queue_run, sync_schedule
from nectar.core.workflows.definition import Problem, validate
from nectar.schema.models import User, Workflow, WorkflowVersion


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


def test_draft(session: Session, ctx: OrgContext, workflow: Workflow, definition: dict, run_input: dict):
    """Queues a test run of `definition` (the builder's draft, saved or not) with `run_input`;
    returns its id. It runs like a manual run but is marked as a test (trigger "test") and keeps
    the document it ran; it counts towards no usage. Editors only, as saving is."""
    _require_editor(ctx)
    problems = validate(definition)
    if problems:
        raise InvalidWorkflow(problems)
    current = version_of(session, workflow.id, workflow.current_version)
    return queue_run(session, ctx.org_id, workflow.id, current.id, "test", run_input, definition=definition)


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


def authors(session: Session, versions: list[WorkflowVersion]) -> dict[uuid.UUID, str]:
    """Who saved each version, by user id: their name, or their email when they gave none."""
    ids = {v.created_by for v in versions if v.created_by}
    if not ids:
        return {}
    return {
        user.id: user.display_name or user.email
        for user in session.scalars(select(User).where(User.id.in_(ids)))
    }


def version_of(session: Session, workflow_id: uuid.UUID, number: int | None) -> WorkflowVersion | None:
    if number is None:
        return None
    return session.scalar(
        select(WorkflowVersion).where(
            WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.version == number
        )
    )
