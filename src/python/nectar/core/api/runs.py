"""/api/v1 routes that act on a run after it started: send it an event, retry it from the step that
failed it, cancel it (registered on the same blueprint, so the same authentication applies)."""

from __future__ import annotations

import uuid

from flask import g, jsonify, request
from flask_login import current_user

from nectar.core.api import models as m
from nectar.core.api.declare import operation
from nectar.core.api.views import _iso, api
from nectar.core.api.workflows import run_json, start_once, version_to_run_again
from nectar.core.runs import queries as run_queries
from nectar.core.runs import recovery, signals
from nectar.shared.database import db
from nectar.shared.rejection import InputRejected
from nectar.shared.web import problem


@api.errorhandler(signals.Refused)
def _refused(error: signals.Refused):
    return problem(error.status, error.detail)


@api.post("/runs/<uuid:run_id>/events/<name>")
@operation("Send an event to a run (any JSON body is its payload)", responses={202: m.Event})
def send_event(run_id: uuid.UUID, name: str):
    """Sends event `name` with the request's JSON body as its payload; a wait_for_event step of
    that name takes it (now, if the run waits for it; or when the run gets there)."""
    try:
        signals.check_event_name(name)
    except signals.Refused as refused:
        raise InputRejected(refused.detail, field="name") from None
    payload = signals.event_payload(request)
    event = signals.deliver_event(db.session, g.org_context.org_id, run_id, name, payload)
    db.session.commit()
    return jsonify(id=str(event.id), run_id=str(run_id), name=name, received_at=_iso(event.received_at)), 202


@api.post("/runs/<uuid:run_id>/retry")
@operation(
    "Retry a failed run from the step that failed it",
    body=m.RunAgain,
    body_required=False,
    responses={200: m.Run, 202: m.RunDetail},
)
def retry(run_id: uuid.UUID):
    """Retries a failed run from the step that failed it, keeping what the steps before it did, on
    the run's version (`"version": "original"`, the default) or the workflow's current one."""
    run = run_queries.get_run(db.session, run_id)
    body = request.get_json(silent=True) if request.data else {}
    choice = body.get("version", "original") if isinstance(body, dict) else None
    if choice not in ("original", "current"):
        raise InputRejected('version is "original" or "current".', path="/version")
    version, as_test = version_to_run_again(run, choice == "current")
    return start_once(
        run.workflow_id,
        run.input or {},
        lambda key: recovery.retry_run(db.session, run, version, as_test=as_test, key=key),
        trigger=recovery.retry_trigger(run, as_test),
        rerun_of=run.id,
    )


@api.post("/runs/<uuid:run_id>/cancel")
@operation("Cancel a run", responses={200: m.RunDetail})
def cancel(run_id: uuid.UUID):
    """Cancels a run that has not ended; a running one stops before its next step that acts or waits."""
    principal = g.get("api_principal")
    who = f"the API key {principal.key_id}" if principal else current_user.user.email
    run = recovery.cancel_run(db.session, run_id, who)
    db.session.commit()
    return jsonify(run_json(run, detail=True))
