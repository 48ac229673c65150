"""Workflow pages: the list, the visual builder, runs and a run's step trace; endpoints and their
test console. The builder and console talk to /api/v1 with the session and its CSRF token."""

from __future__ import annotations

import uuid

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from nectar.core.access import current_org, org_required
from nectar.core.builder import service
from nectar.core.endpoints import service as endpoints
from nectar.core.integrations import connectors
from nectar.core.integrations import service as integrations
from nectar.core.orgs.forms import ImportConnectorForm, naming_form
from nectar.core.runs import queries as run_queries
from nectar.core.workflows.definition import WORKFLOW_SCHEMA
from nectar.schema.models import WorkflowVersion
from nectar.shared.database import db
from nectar.shared.rejection import InputRejected, show_on_form
from nectar.shared.web import form_status

workflow_pages = Blueprint("workflow_pages", __name__)
NewWorkflowForm = naming_form("wf-name", service.NAME_MAX, "Name the workflow.")

STARTER = {
    "trigger": {"type": "http"},
    "steps": [
        {
            "id": "greet",
            "type": "transform",
            "expression": "join(' ', ['Hello', trigger.query.name || 'world'])",
        },
        {"id": "reply", "type": "respond", "status": 200, "body": {"message": "{{ steps.greet }}"}},
    ],
}


@workflow_pages.get("/org/workflows")
@org_required()
def index(new_workflow_form: NewWorkflowForm | None = None):
    new_workflow_form = new_workflow_form or NewWorkflowForm(formdata=None)
    page = render_template(
        "core/workflows/index.html",
        ctx=current_org(),
        workflows=service.list_workflows(db.session),
        form=new_workflow_form,
    )
    return page, form_status(new_workflow_form)


@workflow_pages.post("/org/workflows")
@org_required("admin")
def create():
    form = NewWorkflowForm()
    if not form.validate_on_submit():
        return index(form)
    try:
        workflow = service.create_workflow(
            db.session, current_org(), current_user.user.id, form.target.data, STARTER
        )
    except InputRejected as invalid:
        db.session.rollback()
        show_on_form(form, invalid, "target")
        return index(form)
    db.session.commit()
    return redirect(url_for("workflow_pages.builder", workflow_id=workflow.id))


@workflow_pages.get("/org/workflows/<uuid:workflow_id>")
@org_required()
def builder(workflow_id: uuid.UUID):
    workflow = service.get_workflow(db.session, workflow_id)
    current = service.version_of(db.session, workflow.id, workflow.current_version)
    versions = service.versions(db.session, workflow.id)
    return render_template(
        "core/workflows/builder.html",
        ctx=current_org(),
        workflow=workflow,
        builder_data={
            "workflow_id": str(workflow.id),
            "definition": current.definition if current else STARTER,
            "schema": WORKFLOW_SCHEMA,
            "editable": current_org().at_least("admin"),
            # What an http_request step may call by operationId: the imported connectors' operations.
            "operations": importable_operations(),
            # What one request may carry (the body limit), less room for the rest of the request.
            "max_document_chars": current_app.config["MAX_CONTENT_LENGTH"] - 16 * 1024,
        },
        versions=versions,
        note_max=service.NOTE_MAX,
        authors=service.authors(db.session, versions),
    )


def importable_operations() -> list[dict]:
    """Each callable operation of the organization's imported connectors, for the builder's list."""
    return [
        {
            "connector": connector.name,
            "operation_id": operation_id,
            "method": operation["method"],
            "path": operation["path"],
            "summary": operation["summary"],
        }
        for connector in connectors.list_connectors(db.session)
        for operation_id, operation in sorted(connector.operations.items())
        if not operation["unsupported"]
    ]


@workflow_pages.post("/org/workflows/<uuid:workflow_id>/delete")
@org_required("admin")
def delete(workflow_id: uuid.UUID):
    """The builder's Delete button (a ticked confirmation box with it); a refusal is flashed on the
    builder, naming what still uses the workflow."""
    workflow = service.get_workflow(db.session, workflow_id)
    back = redirect(url_for("workflow_pages.builder", workflow_id=workflow.id))
    if request.form.get("confirm") != "yes":
        flash("Tick the box to confirm the deletion.", "error")
        return back
    name = workflow.name
    try:
        service.delete_workflow(db.session, current_org(), workflow)
    except InputRejected as refused:
        db.session.rollback()
        flash(refused.detail, "error")
        return back
    db.session.commit()
    flash(f"Workflow {name!r} was deleted.", "success")
    return redirect(url_for("workflow_pages.index"))


@workflow_pages.get("/org/runs")
@org_required()
def runs():
    status = request.args.get("status") or None
    trigger = request.args.get("trigger") or None
    try:
        workflow_id = uuid.UUID(request.args["workflow_id"]) if request.args.get("workflow_id") else None
    except ValueError:
        abort(400, "workflow_id must be a workflow's id.")
    return render_template(
        "core/workflows/runs.html",
        ctx=current_org(),
        runs=run_queries.list_runs(
            db.session, workflow_id=workflow_id, status=status, trigger=trigger, limit=100
        ),
        workflows={w.id: w for w in service.list_workflows(db.session)},
        filters={"status": status, "trigger": trigger, "workflow_id": workflow_id},
    )


@workflow_pages.get("/org/runs/<uuid:run_id>")
@org_required()
def run_detail(run_id: uuid.UUID):
    run = run_queries.get_run(db.session, run_id)
    version = db.session.get(WorkflowVersion, run.version_id)
    workflow = service.get_workflow(db.session, run.workflow_id)
    return render_template(
        "core/workflows/run.html",
        ctx=current_org(),
        run=run,
        steps=run.steps,
        version=version,
        workflow=workflow,
        failed_step=(run.output or {}).get("failed_step") if run.status == "failed" else None,
    )


@workflow_pages.get("/org/endpoints")
@org_required()
def endpoint_index():
    listed = endpoints.list_endpoints(db.session)
    public = current_app.config["NECTAR_SETTINGS"].public_url
    workflows = service.list_workflows(db.session)
    return render_template(
        "core/endpoints/index.html",
        ctx=current_org(),
        endpoints=listed,
        workflows=workflows,
        workflow_names={w.id: w.name for w in workflows},
        # The address callers use: the service's public address, never the request's Host header.
        base_url=f"{public}/e/{current_org().org_id}",
        methods=endpoints.METHODS,
        path_max=endpoints.PATH_MAX,
    )


@workflow_pages.get("/org/endpoints/<uuid:endpoint_id>")
@org_required()
def endpoint_console(endpoint_id: uuid.UUID):
    endpoint = endpoints.get_endpoint(db.session, endpoint_id)
    return render_template("core/endpoints/console.html", ctx=current_org(), endpoint=endpoint)


@workflow_pages.get("/org/connections")
@org_required()
def connections():
    return render_template(
        "core/integrations/index.html",
        ctx=current_org(),
        catalog=integrations.catalog(db.session),
        connections=integrations.list_connections(db.session),
        name_max=integrations.NAME_MAX,
    )


@workflow_pages.get("/org/connectors")
@org_required()
def connectors_page(form: ImportConnectorForm | None = None):
    form = form or ImportConnectorForm(formdata=None)
    page = render_template(
        "core/integrations/connectors.html",
        ctx=current_org(),
        connectors=connectors.list_connectors(db.session),
        form=form,
    )
    return page, form_status(form)


@workflow_pages.post("/org/connectors")
@org_required("admin")
def import_connector():
    form = ImportConnectorForm()
    if not form.validate_on_submit():
        return connectors_page(form)
    try:
        connectors.import_connector(
            db.session,
            current_org(),
            name=form.name.data,
            source=form.document.data,
            base_url=form.base_url.data or None,
            user_id=current_user.user.id,
        )
    except InputRejected as invalid:
        db.session.rollback()
        target = form.name if invalid.problems[0].path == "/name" else form.document
        target.errors.extend(f"{p.path}: {p.message}" for p in invalid.problems[:10])
        return connectors_page(form)
    db.session.commit()
    return redirect(url_for("workflow_pages.connectors_page"))
