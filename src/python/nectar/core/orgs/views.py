"""Organization pages: choose or create one, settings, members, invitations, ownership."""

from __future__ import annotations

import uuid
import zoneinfo

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from nectar.core.access import OrgContext, choose_org, current_org, org_required
from nectar.core.accounts import service as accounts
from nectar.core.accounts.forms import NewAccountForm
from nectar.core.accounts.views import begin_session
from nectar.core.org_mail.service import MailLimitReached
from nectar.core.orgs import service
from nectar.core.orgs.forms import ActionForm, CreateOrgForm, InviteForm, RoleForm, SettingsForm
from nectar.shared.database import db
from nectar.shared.rejection import InputRejected, show_on_form
from nectar.shared.tokens import TokenInvalid
from nectar.shared.web import external_url, form_status

orgs = Blueprint("orgs", __name__)


@orgs.get("/orgs")
@login_required
def choose():
    mine = service.my_organizations(db.session, current_user.user.id)
    return render_template("core/orgs/choose.html", organizations=mine, form=ActionForm())


@orgs.route("/orgs/new", methods=["GET", "POST"])
@login_required
def create():
    form = CreateOrgForm()
    if form.validate_on_submit():
        try:
            org = service.create_organization(db.session, current_user.user.id, form.name.data)
        except InputRejected as error:
            db.session.rollback()
            show_on_form(form, error, "name")
        else:
            choose_org(org.id)
            db.session.commit()
            flash(f"{org.name} is ready.", "success")
            return redirect(url_for("dashboard.home"))
    return render_template("core/orgs/create.html", form=form), form_status(form)


@orgs.post("/orgs/<uuid:org_id>/switch")
@login_required
def switch(org_id: uuid.UUID):
    if not ActionForm().validate_on_submit():
        abort(400, "The form expired; try again.")
    if service.membership_of(db.session, current_user.user.id, org_id) is None:
        abort(404)
    choose_org(org_id)
    db.session.commit()
    return redirect(url_for("dashboard.home"))


@orgs.route("/org/settings", methods=["GET", "POST"])
@org_required("admin")
def settings():
    ctx: OrgContext = current_org()
    form = SettingsForm(obj=ctx.org)
    if form.validate_on_submit():
        try:
            service.update_settings(db.session, ctx, form.name.data, form.slug.data, form.timezone.data)
        except InputRejected as error:
            show_on_form(form, error, "name")
            db.session.rollback()
        else:
            db.session.commit()
            flash("Settings saved.", "success")
            return redirect(url_for("orgs.settings"))
    zones = sorted(zoneinfo.available_timezones())
    page = render_template("core/orgs/settings.html", form=form, zones=zones, org=ctx.org)
    return page, form_status(form)


@orgs.get("/org/members")
@org_required()
def members():
    return _members_page(InviteForm(formdata=None))


def _members_page(invite_form: InviteForm):
    ctx = current_org()
    page = render_template(
        "core/orgs/members.html",
        ctx=ctx,
        members=service.members(db.session, ctx),
        invitations=service.pending_invitations(db.session, ctx) if ctx.at_least("admin") else [],
        invite_form=invite_form,
        role_form=RoleForm(formdata=None),
        action_form=ActionForm(formdata=None),
    )
    return page, form_status(invite_form)


@orgs.post("/org/invitations")
@org_required()
def invite():
    ctx = current_org()
    form = InviteForm()
    if not form.validate_on_submit():
        return _members_page(form)
    try:
        invitation, sent = service.invite(
            db.session,
            ctx,
            current_user.user.id,
            form.email.data,
            form.role.data,
            lambda token: external_url("orgs.accept_invitation", token=token),
        )
    except InputRejected as error:
        db.session.rollback()
        show_on_form(form, error, "email")
        return _members_page(form)
    except (MailLimitReached, service.EmailNotConfirmed) as error:
        db.session.rollback()
        flash(str(error), "error")
    else:
        db.session.commit()
        if sent:
            flash(f"Invitation sent to {invitation.email}.", "success")
        else:
            flash(
                f"{invitation.email} has a pending invitation already (until "
                f"{invitation.expires_at:%Y-%m-%d}); withdraw it to send a new one.",
                "info",
            )
    return redirect(url_for("orgs.members"))


@orgs.post("/org/invitations/<uuid:invitation_id>/revoke")
@org_required()
def revoke_invitation(invitation_id: uuid.UUID):
    _checked_action()
    service.revoke_invitation(db.session, current_org(), invitation_id)
    db.session.commit()
    flash("Invitation withdrawn.", "info")
    return redirect(url_for("orgs.members"))


@orgs.post("/org/members/<uuid:user_id>/role")
@org_required()
def change_role(user_id: uuid.UUID):
    form = RoleForm()
    if not form.validate_on_submit():
        abort(400, "Choose a role.")
    _run(lambda ctx: service.change_role(db.session, ctx, user_id, form.role.data), "Role changed.")
    return redirect(url_for("orgs.members"))


@orgs.post("/org/members/<uuid:user_id>/remove")
@org_required()
def remove_member(user_id: uuid.UUID):
    _checked_action()
    if _run(
        lambda ctx: service.remove_member(db.session, ctx, current_user.user.id, user_id), "Member removed."
    ):
        if user_id == current_user.user.id:
            return redirect(url_for("orgs.choose"))
    return redirect(url_for("orgs.members"))


@orgs.post("/org/transfer/<uuid:user_id>")
@org_required("owner")
def transfer(user_id: uuid.UUID):
    _checked_action()
    _run(
        lambda ctx: service.transfer_ownership(db.session, ctx, current_user.user.id, user_id),
        "Ownership transferred.",
    )
    return redirect(url_for("orgs.members"))


def _checked_action() -> None:
    if not ActionForm().validate_on_submit():
        abort(400, "The form expired; reload the page and try again.")


def _run(action, success: str) -> bool:
    try:
        action(current_org())
    except InputRejected as error:
        db.session.rollback()
        flash(str(error), "error")
        return False
    db.session.commit()
    flash(success, "success")
    return True


@orgs.route("/invitations/accept", methods=["GET", "POST"])
def accept_invitation():
    token = request.values.get("token", "")
    try:
        invitation, org = service.invitation_from_token(db.session, current_app.secret_key, token)
    except TokenInvalid as invalid:
        return (
            render_template("core/accounts/message.html", title="Invitation not valid", message=str(invalid)),
            400,
        )
    if current_user.is_authenticated:
        if request.method == "POST" and ActionForm().validate_on_submit():
            try:
                service.accept_invitation(db.session, invitation, current_user.user)
            except InputRejected as error:
                return (
                    render_template(
                        "core/accounts/message.html", title="Not for this account", message=str(error)
                    ),
                    403,
                )
            choose_org(org.id)
            db.session.commit()
            flash(f"Welcome to {org.name}.", "success")
            return redirect(url_for("dashboard.home"))
        return render_template(
            "core/orgs/accept.html", invitation=invitation, org=org, form=ActionForm(), token=token
        )
    # Not signed in: an existing account signs in first; a new person creates an account here.
    if accounts.find_user(db.session, invitation.email) is not None:
        flash(f"Sign in as {invitation.email} to accept the invitation to {org.name}.", "info")
        return redirect(url_for("accounts.login", next=url_for("orgs.accept_invitation", token=token)))
    form = NewAccountForm()
    if form.validate_on_submit():
        try:
            user = accounts.create_verified_account(
                db.session, invitation.email, form.password.data, form.display_name.data
            )
            service.accept_invitation(db.session, invitation, user)
        except InputRejected as error:
            show_on_form(form, error, "password")
        else:
            begin_session(user)
            choose_org(org.id)
            db.session.commit()
            flash(f"Welcome to {org.name}.", "success")
            return redirect(url_for("dashboard.home"))
    page = render_template(
        "core/orgs/accept_signup.html", invitation=invitation, org=org, form=form, token=token
    )
    return page, form_status(form)
