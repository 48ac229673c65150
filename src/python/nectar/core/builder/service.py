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
from nectar.core.integrations.connectors import operation_problems
from nectar.core.runs.calls import find_workflow
from nectar.core.runs.jobs import sync_schedule
from nectar.core.runs.queries import version_of  # noqa: F401 - workflows.version_of for the pages and API
from nectar.core.runs.queue import queue_run
from nectar.core.runs.records import FINAL_STATUSES, TEST_TRIGGER
from nectar.core.variables.service import reference_problems
from nectar.core.workflows import code
from nectar.core.workflows.definition import Problem, calls_in, validate
from nectar.schema.models import (
    AlertRule,
    Endpoint,
    IntegrationConnection,
    User,
    Workflow,
    WorkflowRun,
    WorkflowSchedule,
    WorkflowVersion,
)
from nectar.schema.models.columns import max_length
from nectar.shared.rejection import InputRejected

NAME_MAX = max_length(Workflow.name)
NOTE_MAX = max_length(WorkflowVersion.note)


INVALID_WORKFLOW = "The workflow document is not valid."


def problems_of(ctx: OrgContext, definition: object) -> list[Problem]:
    """validate()'s problems, its code checked within the organization's share of the sandboxes."""
    with code.tenant_share(ctx.org_id):
        return validate(definition)


def require_editor(ctx: OrgContext) -> None:
    if not ctx.at_least("admin"):
        raise PermissionDenied("Only an admin or owner can change workflows.")


def create_workflow(
    session: Session, ctx: OrgContext, user_id, name: str, definition: dict, description=None
) -> Workflow:
    require_editor(ctx)
    name = _checked_name(name)
    problems = problems_of(ctx, definition)
    if problems:
        raise InputRejected(INVALID_WORKFLOW, problems)
    workflow = Workflow(
        id=uuid.uuid4(), org_id=ctx.org_id, name=name, description=description, created_by=user_id
    )
    session.add(workflow)
    _flush_name(session, name)
    save_version(session, ctx, workflow, definition, user_id, note="first version")
    return workflow


def _checked_name(name: str | None) -> str:
    name = (name or "").strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise InputRejected(INVALID_WORKFLOW, [Problem("/name", f"Use 1 to {NAME_MAX} characters.")])
    return name


def _flush_name(session: Session, name: str) -> None:
    """Writes the pending workflow; a name the organization has already is a 422 on /name."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise InputRejected(
            INVALID_WORKFLOW, [Problem("/name", f"A workflow named {name!r} exists already.")]
        ) from None


_UNCHANGED = object()


def change_workflow(
    session: Session, ctx: OrgContext, workflow: Workflow, *, name=_UNCHANGED, description=_UNCHANGED
) -> Workflow:
    """Renames `workflow` and/or changes its description (None: none); its versions stay. A rename
    is refused (409) while another workflow's current version calls it by its old name: that call
    would find nothing (or, later, another workflow given that name)."""
    require_editor(ctx)
    if name is not _UNCHANGED:
        name = _checked_name(name)
        if name != workflow.name:
            callers = _callers(session, workflow, refs={workflow.name})
            if callers:
                raise InputRejected(
                    f"Workflows call {workflow.name!r} by its name: {', '.join(sorted(callers))}; "
                    "make them call it by id (or the new name) first.",
                    field="name",
                    status=409,
                )
            workflow.name = name
    if description is not _UNCHANGED:
        workflow.description = description or None
    workflow.updated_at = datetime.now(UTC)
    _flush_name(session, workflow.name)
    return workflow


def organization_problems(session: Session, definition: dict) -> list[Problem]:
    """What `definition` uses of its organization that is not there or does not fit: variables and
    secrets it reads, operations of imported connectors it calls."""
    return reference_problems(session, definition) + operation_problems(session, definition)


def save_version(
    session: Session, ctx: OrgContext, workflow: Workflow, definition: dict, user_id, note=None
) -> WorkflowVersion:
    """Validates and stores `definition` as the next version, which becomes the current one."""
    require_editor(ctx)
    problems = problems_of(ctx, definition) or (
        _call_problems(session, workflow, definition) + organization_problems(session, definition)
    )
    if problems:
        raise InputRejected(INVALID_WORKFLOW, problems)
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
        note=(note or "")[:NOTE_MAX] or None,
        created_by=user_id,
    )
    session.add(version)
    workflow.current_version = number
    workflow.updated_at = datetime.now(UTC)
    session.flush()
    sync_schedule(session, workflow, definition)
    session.flush()
    return version


def _call_problems(session: Session, workflow: Workflow, definition: dict) -> list[Problem]:
    """Each call_workflow step names a workflow of this organization, and no chain of calls through
    current versions leads back to `workflow` (its runs would call each other without end)."""
    problems = []
    for path, step in calls_in(definition):
        target = find_workflow(session, step["workflow"])
        if target is None:
            problems.append(
                Problem(f"{path}/workflow", f"no workflow {step['workflow']!r} in this organization")
            )
        elif (cycle := _calls_back(session, target, workflow.id)) is not None:
            names = " -> ".join([workflow.name, *cycle])
            problems.append(Problem(f"{path}/workflow", f"this call would make a cycle of calls: {names}"))
    return problems


def _calls_back(session: Session, start: Workflow, home: uuid.UUID) -> list[str] | None:
    """The names along a chain of calls from `start` to `home`, through each workflow's current
    version, if there is one."""
    pending, seen = [(start, [start.name])], set()
    while pending:
        workflow, names = pending.pop()
        if workflow.id == home:
            return names
        if workflow.id in seen:
            continue
        seen.add(workflow.id)
        version = version_of(session, workflow.id, workflow.current_version)
        for _, step in calls_in(version.definition) if version else ():
            target = find_workflow(session, step["workflow"])
            if target is not None:
                pending.append((target, [*names, target.name]))
    return None


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
    require_editor(ctx)
    problems = problems_of(ctx, definition) or organization_problems(session, definition)
    if problems:
        raise InputRejected(INVALID_WORKFLOW, problems)
    current = version_of(session, workflow.id, workflow.current_version)
    return queue_run(
        session, ctx.org_id, workflow.id, current.id, TEST_TRIGGER, run_input, definition=definition
    )


def delete_workflow(session: Session, ctx: OrgContext, workflow: Workflow) -> None:
    """Deletes `workflow` when nothing uses it any more, else InputRejected (409) naming each user:
    endpoints bound to it, connections that start it (webhooks), a schedule in its current version,
    alert rules that watch it or start it on errors, other workflows whose current version calls
    it, and its runs not yet ended. Editors only.
    Finished runs' history goes with it (the foreign keys cascade through its versions to its runs,
    their checkpoints, events and approvals); what they used stays counted (usage_daily), and so
    do its test runs towards their bound (queue.MAX_TEST_RUNS_PER_HOUR)."""
    require_editor(ctx)
    # A run being queued holds a key-share lock on its version until it commits: locking the
    # versions first means such a run is counted below (as not ended), or waits and then finds its
    # version gone, rather than being deleted with the workflow unseen.
    session.execute(
        select(WorkflowVersion.id).where(WorkflowVersion.workflow_id == workflow.id).with_for_update()
    )
    users = still_used_by(session, workflow)
    if users:
        raise InputRejected(
            f"Workflow {workflow.name!r} is still in use: " + "; ".join(p.message for p in users) + ".",
            users,
            status=409,
        )
    # The schedule index has no foreign key (see WorkflowSchedule): a schedule the check above
    # found none of in the current version may still be a leftover row.
    schedule = session.get(WorkflowSchedule, workflow.id)
    if schedule is not None:
        session.delete(schedule)
    session.delete(workflow)
    session.flush()


def still_used_by(session: Session, workflow: Workflow) -> list[Problem]:
    """What would break or vanish if `workflow` were deleted, one problem per kind (by `field`)."""
    used = []

    def uses(field: str, what: str, names) -> None:
        names = sorted(names)
        if names:
            shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
            used.append(Problem(None, f"{what}: {shown}", field=field))

    endpoints = session.execute(
        select(Endpoint.method, Endpoint.path).where(Endpoint.workflow_id == workflow.id)
    ).all()
    uses("endpoints", "endpoints bound to it", (f"{method} {path}" for method, path in endpoints))
    # The hook reads its workflow_id through uuid.UUID(), which takes other spellings of the id
    # (upper case, for one) than the one stored here: compared as UUIDs, not as text.
    hooks = session.execute(
        select(IntegrationConnection.name, IntegrationConnection.config["workflow_id"].astext).where(
            IntegrationConnection.config.has_key("workflow_id")
        )
    ).all()
    uses("connections", "connections that start it", (n for n, ref in hooks if _names_id(ref, workflow)))
    current = version_of(session, workflow.id, workflow.current_version)
    trigger = (current.definition or {}).get("trigger") or {} if current else {}
    if trigger.get("type") == "schedule":
        uses("schedule", "its current version runs on a schedule", [repr(trigger.get("cron"))])
    rules = session.scalars(
        select(AlertRule.name).where(
            (AlertRule.workflow_id == workflow.id)
            | ((AlertRule.channel == "workflow") & (AlertRule.target == str(workflow.id)))
        )
    ).all()
    uses("alert_rules", "alert rules that watch it or start it on errors", rules)
    uses("callers", "workflows whose current version calls it", _callers(session, workflow))
    unfinished = session.scalar(
        select(func.count())
        .select_from(WorkflowRun)
        .where(WorkflowRun.workflow_id == workflow.id, WorkflowRun.status.not_in(FINAL_STATUSES))
    )
    if unfinished:
        used.append(
            Problem(None, f"{unfinished} of its runs have not ended (cancel them or wait)", field="runs")
        )
    return used


def _callers(session: Session, workflow: Workflow, refs: set[str] | None = None) -> list[str]:
    """Names of the other workflows whose current version has a call_workflow step naming
    `workflow` by one of `refs` (default: its name or its id in any spelling, as find_workflow
    resolves them)."""
    current_versions = session.execute(
        select(Workflow.name, WorkflowVersion.definition)
        .join(
            WorkflowVersion,
            (WorkflowVersion.workflow_id == Workflow.id)
            & (WorkflowVersion.version == Workflow.current_version),
        )
        .where(Workflow.id != workflow.id)
    ).all()

    def names_it(ref) -> bool:
        if refs is not None:
            return ref in refs
        return ref == workflow.name or _names_id(ref, workflow)

    return [
        name
        for name, definition in current_versions
        if any(names_it(step.get("workflow")) for _, step in calls_in(definition))
    ]


def _names_id(ref: object, workflow: Workflow) -> bool:
    """Whether `ref` is `workflow`'s id in any spelling uuid.UUID() reads (upper case, no hyphens,
    braces, a urn:uuid: prefix)."""
    try:
        return isinstance(ref, str) and uuid.UUID(ref) == workflow.id
    except ValueError:
        return False


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
