"""Pages and addresses that reach a waiting run without the API: a step's resume URL (a POST from an
outside system, no session, no CSRF: the signed URL is the credential), the organization's pending
approvals, and the page an approval email's link opens (GET shows, only a POST with the form's
CSRF token by a member with the role decides)."""

from __future__ import annotations

import uuid

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import StringField, TextAreaField
from wtforms.validators import AnyOf, Length, Optional

from nectar.core.access import ROLE_RANK, PermissionDenied, choose_org, current_org, org_required
from nectar.core.extensions import csrf
from nectar.core.runs import signals
from nectar.core.runs.links import APPROVAL_PATH, RESUME_PATH, Target, run_links
from nectar.schema.models import Membership, Organization, Workflow, WorkflowApproval, WorkflowRun
from nectar.shared.database import db, scope_session
from nectar.shared.tokens import TokenExpired, TokenInvalid
from nectar.shared.web import problem

run_signals = Blueprint("run_signals", __name__)
csrf.exempt(run_signals)  # outside systems POST here; the signed URL is their credential
approval_pages = Blueprint("approval_pages", __name__)


class DecisionForm(FlaskForm):
    decision = StringField(validators=[AnyOf(signals.DECISIONS, message="Approve or reject.")])  # the button
    comment = TextAreaField("Comment", validators=[Optional(), Length(max=signals.MAX_COMMENT_CHARS)])


@run_signals.post(RESUME_PATH + "<token>")
def resume(token: str):
    """An event for the step the URL names, with the request's body as its payload: 202 once
    stored; 403 forged, 410 expired or the step's time is over, 409 the run has ended or the step
    was resumed already."""
    try:
        target = run_links().read_resume_token(token)
    except TokenExpired:
        return problem(410, "This resume URL has expired.")
    except TokenInvalid:
        return problem(403, "This resume URL is not valid.")
    scope_session(db.session, org_id=target.org_id)
    org = db.session.get(Organization, target.org_id)
    if org is None or org.status != "active":
        return problem(403, "The organization of this run is not active.")
    try:
        payload = signals.event_payload(request)
        event = signals.deliver_event(
            db.session, target.org_id, target.run_id, target.event, payload, step_key=target.step_key
        )
    except signals.Refused as refused:
        return problem(refused.status, refused.detail)
    except LookupError:
        return problem(410, "The run no longer exists.")
    db.session.commit()
    return jsonify(id=str(event.id), run_id=str(target.run_id), name=target.event, step=target.step_key), 202


@approval_pages.get("/org/approvals")
@org_required()
def index():
    return render_template(
        "core/approvals/index.html",
        ctx=current_org(),
        pending=signals.pending_approvals(db.session),
        form=DecisionForm(),
        role_rank=ROLE_RANK,
    )


@approval_pages.post("/org/approvals/<uuid:approval_id>")
@org_required()
def decide(approval_id: uuid.UUID):
    approval = db.session.get(WorkflowApproval, approval_id)
    if approval is None:
        raise LookupError("no such approval")
    decision = _decide(approval, current_org().role)
    flash(f"{approval.title}: {decision}. The run goes on.", "success")
    return redirect(url_for("approval_pages.index"))


@approval_pages.route(APPROVAL_PATH + "<token>", methods=["GET", "POST"])
def confirm(token: str):
    """The page an approval email's link opens: who may decide signs in, reads, and confirms."""
    try:
        target = run_links().read_approval_token(token)
    except TokenExpired:
        abort(410, "This link has expired: the time to decide has passed.")
    except TokenInvalid:
        abort(403, "This link is not valid. Check that you opened all of the link from the email.")
    if not current_user.is_authenticated:
        return redirect(url_for("accounts.login", next=request.full_path))
    approval, role = _approval_for(target)
    if request.method == "POST":
        decision = _decide(approval, role)
        choose_org(target.org_id)  # the run's page is in the approval's organization
        flash(f"{approval.title}: {decision}. The run goes on.", "success")
        return redirect(url_for("workflow_pages.run_detail", run_id=approval.run_id))
    if ROLE_RANK[role] < ROLE_RANK[approval.approver_role]:
        abort(403, f"Deciding this needs the {approval.approver_role} role or above; yours is {role}.")
    run = db.session.get(WorkflowRun, approval.run_id)
    return render_template(
        "core/approvals/confirm.html",
        approval=approval,
        run=run,
        workflow=db.session.get(Workflow, run.workflow_id),
        org=db.session.get(Organization, target.org_id),
        form=DecisionForm(decision=request.args.get("decision")),
        token=token,
    )


def _approval_for(target: Target) -> tuple[WorkflowApproval, str]:
    """The approval a link names, with the signed-in user's role in its organization (the session
    is scoped to that organization from here on)."""
    user_id = current_user.user.id
    scope_session(db.session, user_id=user_id)  # the user's own memberships, whichever organization is chosen
    membership = db.session.scalar(
        select(Membership).where(Membership.org_id == target.org_id, Membership.user_id == user_id)
    )
    if membership is None:
        abort(403, "This approval belongs to an organization you are not a member of.")
    scope_session(db.session, org_id=target.org_id)
    org = db.session.get(Organization, target.org_id)
    if org.status != "active":
        abort(403, f"{org.name} is suspended.")
    approval = db.session.get(WorkflowApproval, target.approval_id)
    if approval is None:
        abort(410, "This approval no longer exists: its run was removed.")
    if (approval.run_id, approval.step_key) != (target.run_id, target.step_key):
        abort(403, "This link does not belong to this approval.")
    return approval, membership.role


def _decide(approval: WorkflowApproval, role: str) -> str:
    form = DecisionForm()
    if not form.validate_on_submit():
        errors = [message for messages in form.errors.values() for message in messages]
        abort(400 if "csrf_token" in form.errors else 422, " ".join(errors))
    try:
        signals.decide(db.session, approval, current_user.user, role, form.decision.data, form.comment.data)
    except PermissionDenied as denied:
        abort(403, str(denied))
    except signals.Refused as refused:
        abort(refused.status, refused.detail)
    db.session.commit()
    return form.decision.data
