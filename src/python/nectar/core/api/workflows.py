"""/api/v1 routes for workflows, versions, runs and endpoints (registered on the same blueprint,
so the same authentication and error handling apply)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from flask import g, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from nectar.core.api import models as m
from nectar.core.api.declare import operation
from nectar.core.api.schemas import published_workflow_schema
from nectar.core.api.views import _body, _ctx, _iso, _user_id, api
from nectar.core.builder import preview as previews
from nectar.core.builder import service as workflows
from nectar.core.endpoints import service as endpoints
from nectar.core.endpoints.openapi import organization_openapi
from nectar.core.runs import queries as run_queries
from nectar.core.runs.queue import queue_run
from nectar.core.runs.records import TEST_TRIGGER, checked_idempotency_key
from nectar.schema.models import Workflow, WorkflowVersion
from nectar.schema.models.workflows import RUN_STATUSES
from nectar.shared.bad_input import JsonObject
from nectar.shared.database import db
from nectar.shared.rejection import InputRejected
from nectar.shared.web import problem_later

DESCRIPTION_MAX = 2000  # a workflow's or endpoint's description, as people write them


def workflow_json(workflow, version=None) -> dict:
    body = {
        "id": str(workflow.id),
        "name": workflow.name,
        "description": workflow.description,
        "current_version": workflow.current_version,
        "is_active": workflow.is_active,
        "updated_at": _iso(workflow.updated_at),
    }
    if version is not None:
        body["definition"] = version.definition
    return body


def run_json(run, *, detail: bool = False) -> dict:
    body = {
        "id": str(run.id),
        "workflow_id": str(run.workflow_id),
        "version_id": str(run.version_id),
        "trigger": run.trigger,
        "status": run.status,
        "error": run.error,
        "queued_at": _iso(run.queued_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration_ms": run.duration_ms,
        "rerun_of": str(run.rerun_of) if run.rerun_of else None,
        # A waiting run: until when (null: until woken) and what for; a failed one: the step that failed it.
        "wake_at": _iso(run.wake_at),
        "waiting_for": run.waiting_for,
        "failed_step": (run.output or {}).get("failed_step") if run.status == "failed" else None,
        "parent_run_id": str(run.parent_run_id) if run.parent_run_id else None,  # a call_workflow step's run
        "test": run.trigger == TEST_TRIGGER,  # a draft tested in the builder: not counted as usage
    }
    if detail:
        body["input"] = run.input
        body["output"] = run.output
        body["steps"] = [{"type": s["step_type"], **s} for s in run.steps]
    return body


@api.get("/workflow-schema.json")
@operation("The workflow language's JSON Schema", responses={200: m.Document})
def workflow_schema():
    return jsonify(published_workflow_schema())


@api.post("/workflows/validate")
@operation(
    "Check a workflow document without saving it", body=m.DraftDefinition, responses={200: m.Validation}
)
def validate_document():
    definition = _body().get("definition")
    problems = workflows.problems_of(_ctx(), definition) or workflows.organization_problems(
        db.session, definition
    )
    return jsonify(valid=not problems, errors=[p.as_dict() for p in problems])


@api.get("/workflows")
@operation("Workflows", responses={200: m.WorkflowList})
def list_workflows():
    return jsonify(items=[workflow_json(w) for w in workflows.list_workflows(db.session)])


@api.post("/workflows")
@operation(
    "Create a workflow",
    body=m.NewWorkflow,
    responses={201: m.Workflow},
    example={
        "name": "Ping",
        "definition": {
            "trigger": {"type": "http"},
            "steps": [{"id": "r", "type": "respond", "status": 200, "body": "pong"}],
        },
    },
    links={
        201: {
            k: {"operationId": k, "parameters": {"workflow_id": "$response.body#/id"}}
            for k in ("get_workflow", "list_versions", "run_now")
        }
    },
)
def create_workflow():
    body = _body()
    workflow = workflows.create_workflow(
        db.session,
        _ctx(),
        _user_id(),
        body.text("name", max_length=200),
        body.get("definition"),
        body.text("description", max_length=DESCRIPTION_MAX),
    )
    db.session.commit()
    return jsonify(workflow_json(workflow)), 201


@api.get("/workflows/<uuid:workflow_id>")
@operation("A workflow with its current definition", responses={200: m.WorkflowWithDefinition})
def get_workflow(workflow_id: uuid.UUID):
    workflow = workflows.get_workflow(db.session, workflow_id)
    return jsonify(
        workflow_json(workflow, workflows.version_of(db.session, workflow.id, workflow.current_version))
    )


@api.patch("/workflows/<uuid:workflow_id>")
@operation(
    "Rename a workflow or change its description",
    body=m.WorkflowChange,
    responses={200: m.Workflow},
    example={"description": "Answers price checks for the shop"},
)
def update_workflow(workflow_id: uuid.UUID):
    """Changes the fields the body names (its versions stay as they are). A new name must be free,
    and no other workflow may call this one by its old name."""
    body = _body()
    changes = {}
    if "name" in body:
        changes["name"] = body.text("name", max_length=workflows.NAME_MAX)
    if "description" in body:
        changes["description"] = body.text("description", max_length=DESCRIPTION_MAX)
    workflow = workflows.get_workflow(db.session, workflow_id)
    workflows.change_workflow(db.session, _ctx(), workflow, **changes)
    db.session.commit()
    return jsonify(workflow_json(workflow))


@api.delete("/workflows/<uuid:workflow_id>")
@operation("Delete a workflow nothing uses any more", responses={204: None})
def delete_workflow(workflow_id: uuid.UUID):
    """Refused (409, each user named in `errors`) while endpoints, connections, a schedule, alert
    rules, other workflows' calls or unfinished runs use it; its finished runs go with it."""
    workflows.delete_workflow(db.session, _ctx(), workflows.get_workflow(db.session, workflow_id))
    db.session.commit()
    return "", 204


@api.get("/workflows/<uuid:workflow_id>/versions")
@operation("A workflow's versions", responses={200: m.VersionList})
def list_versions(workflow_id: uuid.UUID):
    workflows.get_workflow(db.session, workflow_id)
    return jsonify(
        items=[
            {
                "version": v.version,
                "note": v.note,
                "created_at": _iso(v.created_at),
                "definition": v.definition,
            }
            for v in workflows.versions(db.session, workflow_id)
        ]
    )


@api.post("/workflows/<uuid:workflow_id>/versions")
@operation(
    "Save a new version (it becomes the current one)", body=m.NewVersion, responses={201: m.VersionNumber}
)
def save_version(workflow_id: uuid.UUID):
    body = _body()
    workflow = workflows.get_workflow(db.session, workflow_id)
    version = workflows.save_version(
        db.session, _ctx(), workflow, body.get("definition"), _user_id(), body.text("note", max_length=500)
    )
    db.session.commit()
    return jsonify(version=version.version), 201


@api.post("/workflows/<uuid:workflow_id>/rollback")
@operation(
    "Make an earlier version current again (as a new version)",
    body=m.Rollback,
    responses={201: m.VersionNumber},
    example={"version": 1},
)
def roll_back(workflow_id: uuid.UUID):
    to_version = _body().whole_number("version", minimum=1)
    if to_version is None:
        raise InputRejected("version (a number) is required.", path="/version")
    workflow = workflows.get_workflow(db.session, workflow_id)
    version = workflows.roll_back(db.session, _ctx(), workflow, to_version, _user_id())
    db.session.commit()
    return jsonify(version=version.version), 201


@api.post("/workflows/<uuid:workflow_id>/runs")
@operation(
    "Start a run",
    body=m.RunRequest,
    body_required=False,
    responses={200: m.Run, 202: m.RunDetail},
    example={"input": {"name": "Ada"}},
    links={202: {"GetRun": {"operationId": "get_run", "parameters": {"run_id": "$response.body#/id"}}}},
)
def run_now(workflow_id: uuid.UUID):
    """A manual run with the given input, on the current version (or `version`)."""
    body = _body()
    workflow = workflows.get_workflow(db.session, workflow_id)
    requested = body.whole_number("version", minimum=1)
    version = workflows.version_of(db.session, workflow.id, requested or workflow.current_version)
    if version is None:
        raise InputRejected("No such version of this workflow.", path="/version")
    run_input = body.get("input", {})
    if not isinstance(run_input, dict):
        raise InputRejected("input must be a JSON object.", path="/input")
    org_id = g.org_context.org_id
    return start_once(
        workflow.id,
        run_input,
        lambda key: queue_run(db.session, org_id, workflow.id, version.id, "manual", run_input, key=key),
        trigger="manual",
    )


def start_once(
    workflow_id: uuid.UUID,
    run_input: dict,
    start: Callable[[str | None], uuid.UUID],
    *,
    trigger: str,
    rerun_of: uuid.UUID | None = None,
):
    """The answer to a request that starts a run with `start(key)`, once per Idempotency-Key: 202
    with the new run, or 200 with the run the key started before (the same request sent again:
    run_to_replay), also when both were sent at the same moment."""
    key = checked_idempotency_key(request.headers.get("Idempotency-Key"))

    def earlier_run():
        if not key:
            return None
        return run_queries.run_to_replay(
            db.session, workflow_id, key, run_input, trigger=trigger, rerun_of=rerun_of
        )

    if (earlier := earlier_run()) is not None:
        return jsonify(run_json(earlier)), 200
    try:
        with db.session.begin_nested():
            run_id = start(key)
    except IntegrityError:  # the same key, sent at the same moment, was recorded first
        if (earlier := earlier_run()) is None:
            _not_found_if_deleted(workflow_id)
            raise
        return jsonify(run_json(earlier)), 200
    db.session.commit()
    return jsonify(run_json(run_queries.get_run(db.session, run_id), detail=True)), 202


def _not_found_if_deleted(workflow_id: uuid.UUID) -> None:
    """After queueing a run failed on a key: LookupError (404) when the workflow was deleted while
    the run waited on its version's lock (builder.service.delete_workflow)."""
    if db.session.scalar(select(Workflow.id).where(Workflow.id == workflow_id)) is None:
        raise LookupError("no such workflow")


@api.post("/workflows/<uuid:workflow_id>/test-runs")
@operation("Run a draft as a test run", body=m.TestRunRequest, responses={202: m.RunDetail})
def test_draft(workflow_id: uuid.UUID):
    """Runs `definition` (the builder's draft, saved or not) as a test run with `input`: recorded
    like any run, marked as a test, with the document it ran. Nothing is saved as a version."""
    body = _body()
    workflow = workflows.get_workflow(db.session, workflow_id)
    run_input = body.get("input", {})
    if not isinstance(run_input, dict):
        raise InputRejected("input must be a JSON object.", path="/input")
    try:
        with db.session.begin_nested():
            run_id = workflows.test_draft(db.session, _ctx(), workflow, body.get("definition"), run_input)
    except IntegrityError:
        _not_found_if_deleted(workflow_id)
        raise
    db.session.commit()
    return jsonify(run_json(run_queries.get_run(db.session, run_id), detail=True)), 202


@api.post("/workflows/<uuid:workflow_id>/preview")
@operation("Preview an expression over a run's data", body=m.PreviewRequest, responses={200: m.Preview})
def preview_expression(workflow_id: uuid.UUID):
    """What `text` (a JMESPath expression when `bare`, else a {{ }} template) gives at `pointer` in
    `definition`, over the data of the run `run_id` (default: the workflow's newest run).
    `with_context` adds the context the expression sees there (for completion)."""
    body = _body()
    workflows.get_workflow(db.session, workflow_id)
    principal = g.get("api_principal")
    try:
        previews.count_preview(db.session, principal.key_id if principal else _user_id())
    except previews.PreviewRefused as refused:
        db.session.commit()
        return problem_later(refused.status, refused.detail, refused.retry_after)
    db.session.commit()
    text, pointer = body.get("text", ""), body.get("pointer", "")
    if not isinstance(text, str) or not isinstance(pointer, str):
        raise InputRejected("text and pointer are strings.", path="/text")
    try:
        run_id = uuid.UUID(body["run_id"]) if body.get("run_id") else None
    except (ValueError, TypeError):
        raise InputRejected("run_id must be a run's id.", path="/run_id") from None
    sample = previews.sample_data(db.session, workflow_id, run_id)
    scope, context = previews.context_at(body.get("definition"), pointer, sample)
    result = previews.preview(text, bool(body.get("bare")), context)
    result["run_id"] = sample["run_id"]
    if body.get("with_context"):
        result["context"] = context
    return jsonify(result)


@api.get("/runs")
@operation("Runs, newest first", query=m.RunFilter, responses={200: m.RunList})
def list_runs():
    before = request.args.get("before")
    try:
        before_time = datetime.fromisoformat(before) if before else None
        workflow_id = uuid.UUID(request.args["workflow_id"]) if request.args.get("workflow_id") else None
    except ValueError:
        raise InputRejected(
            "before is an ISO 8601 time; workflow_id a UUID.", field="before", status=400
        ) from None
    if request.args.get("status") and request.args["status"] not in RUN_STATUSES:
        raise InputRejected(f"status is one of {', '.join(RUN_STATUSES)}.", field="status", status=400)
    runs = run_queries.list_runs(
        db.session,
        workflow_id=workflow_id,
        status=request.args.get("status"),
        trigger=request.args.get("trigger"),
        before=before_time,
        limit=_limit(),
    )
    return jsonify(items=[run_json(r) for r in runs], next_before=_iso(runs[-1].queued_at) if runs else None)


def _limit() -> int:
    raw = request.args.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 200:
        raise InputRejected("limit is 1 to 200.", field="limit", status=400)
    return int(raw)


@api.get("/runs/<uuid:run_id>")
@operation("A run with its input, output and steps", responses={200: m.RunDetail})
def get_run(run_id: uuid.UUID):
    return jsonify(run_json(run_queries.get_run(db.session, run_id), detail=True))


def version_to_run_again(run, use_current: bool) -> tuple[WorkflowVersion, bool]:
    """The version a re-run or retry of `run` runs (its own, or the workflow's current one), and
    whether it is a test again: a test run on its own version runs the same draft, which is testing
    it (editors only)."""
    if use_current:
        workflow = workflows.get_workflow(db.session, run.workflow_id)
        version = workflows.version_of(db.session, workflow.id, workflow.current_version)
    else:
        version = db.session.get(WorkflowVersion, run.version_id)
    test = run.trigger == TEST_TRIGGER and not use_current
    if test:
        workflows.require_editor(_ctx())
    return version, test


@api.post("/runs/<uuid:run_id>/rerun")
@operation(
    "Run the same input again", body=m.RunAgain, body_required=False, responses={200: m.Run, 202: m.RunDetail}
)
def rerun(run_id: uuid.UUID):
    """Runs the same input again from the start, on the original version or (`"version":
    "current"`) the workflow's current one."""
    run = run_queries.get_run(db.session, run_id)
    use_current = _body().get("version") == "current" if request.data else False
    version, test = version_to_run_again(run, use_current)
    org_id = g.org_context.org_id
    trigger, definition = (TEST_TRIGGER, run.definition) if test else ("rerun", None)

    def again(key: str | None) -> uuid.UUID:
        return queue_run(
            db.session,
            org_id,
            run.workflow_id,
            version.id,
            trigger,
            run.input or {},
            key=key,
            rerun_of=run.id,
            definition=definition,
        )

    return start_once(run.workflow_id, run.input or {}, again, trigger=trigger, rerun_of=run.id)


def endpoint_json(endpoint) -> dict:
    return {
        "id": str(endpoint.id),
        "method": endpoint.method,
        "path": endpoint.path,
        "url": f"/e/{endpoint.org_id}{endpoint.path}",
        "workflow_id": str(endpoint.workflow_id),
        "pinned_version": endpoint.pinned_version,
        "auth": endpoint.auth,
        "request_schema": endpoint.request_schema,
        "description": endpoint.description,
        "is_enabled": endpoint.is_enabled,
    }


def _endpoint_fields(body: JsonObject) -> dict:
    try:
        workflow_id = uuid.UUID(str(body.get("workflow_id")))
    except ValueError:
        raise InputRejected("workflow_id must be a workflow's id.", path="/workflow_id") from None
    return {
        "method": body.text("method", max_length=10, default=""),
        "path": body.text("path", max_length=300),
        "workflow_id": workflow_id,
        "auth": body.text("auth", max_length=20, default="api_key"),
        "request_schema": body.get("request_schema"),
        "pinned_version": body.whole_number("pinned_version", minimum=1),
        "description": body.text("description", max_length=DESCRIPTION_MAX),
    }


@api.get("/endpoints")
@operation("Endpoints", responses={200: m.EndpointList})
def list_endpoints():
    return jsonify(items=[endpoint_json(e) for e in endpoints.list_endpoints(db.session)])


@api.post("/endpoints")
@operation(
    "Create an endpoint",
    body=m.EndpointFields,
    responses={201: m.Endpoint},
    example={
        "method": "POST",
        "path": "/orders",
        "workflow_id": "00000000-0000-0000-0000-000000000000",
        "auth": "api_key",
    },
)
def create_endpoint():
    endpoint = endpoints.save_endpoint(db.session, _ctx(), **_endpoint_fields(_body()))
    db.session.commit()
    return jsonify(endpoint_json(endpoint)), 201


@api.put("/endpoints/<uuid:endpoint_id>")
@operation("Replace an endpoint", body=m.EndpointFields, responses={200: m.Endpoint})
def update_endpoint(endpoint_id: uuid.UUID):
    endpoint = endpoints.get_endpoint(db.session, endpoint_id)
    endpoint = endpoints.save_endpoint(db.session, _ctx(), endpoint=endpoint, **_endpoint_fields(_body()))
    db.session.commit()
    return jsonify(endpoint_json(endpoint))


@api.delete("/endpoints/<uuid:endpoint_id>")
@operation("Delete an endpoint", responses={204: None})
def delete_endpoint(endpoint_id: uuid.UUID):
    endpoints.delete_endpoint(db.session, _ctx(), endpoint_id)
    db.session.commit()
    return "", 204


@api.get("/endpoints/openapi.json")
@operation("The OpenAPI document of the organization's endpoints", responses={200: m.Document})
def endpoints_openapi():
    return jsonify(organization_openapi(_ctx().org, endpoints.list_endpoints(db.session)))
