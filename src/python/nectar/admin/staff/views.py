"""Staff sign-in, two-factor authentication (enrol, verify, disable), account page and sign-out."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, session

from nectar.admin import audit
from nectar.admin.staff import service
from nectar.admin.staff.access import current_staff, live_session, sign_in_session
from nectar.admin.staff.forms import CodeForm, SignInForm
from nectar.shared.database import db
from nectar.shared.rejection import InputRejected, show_on_form
from nectar.shared.web import safe_next_path

staff = Blueprint("staff", __name__)
AFTER_SIGN_IN = "after_sign_in"


def _keys():
    return current_app.config["NECTAR_KEY_RING"]


def _after_sign_in(target: str | None) -> str:
    """Same-site paths only (no open redirect), and never back to a sign-in step."""
    path = safe_next_path(target, "/")
    return "/" if path.startswith("/login") else path


@staff.route("/login", methods=["GET", "POST"])
def login():
    form = SignInForm(next=request.args.get("next", ""))
    error, locked = None, False
    if form.validate_on_submit():
        try:
            member = service.sign_in(db.session, form.email.data, form.password.data, request.remote_addr)
        except service.SignInRefused as refused:
            error, locked = str(refused), refused.locked
        else:
            row = service.start_session(db.session, member, request.remote_addr, request.user_agent.string)
            db.session.commit()
            sign_in_session(row)
            target = _after_sign_in(form.next.data)
            if not service.needs_second_factor(member):
                return redirect(target)
            session[AFTER_SIGN_IN] = target
            return redirect("/login/totp" if member.totp_enabled_at else "/account/totp")
    status = 429 if locked else (401 if error else 200)
    return render_template("admin/staff/login.html", form=form, error=error, signed_in=g.get("staff")), status


@staff.route("/login/totp", methods=["GET", "POST"])
def totp_verify():
    live = live_session()
    if live.second_factor_done:
        return redirect(session.pop(AFTER_SIGN_IN, "/"))
    if live.staff.totp_enabled_at is None:
        return redirect("/account/totp")
    form = CodeForm()
    if form.validate_on_submit():
        try:
            service.check_totp(db.session, _keys(), live.staff, form.code.data)
        except InputRejected as error:
            db.session.commit()  # keep the failure count
            show_on_form(form, error, "code")
        else:
            live.row.totp_verified = True
            db.session.commit()
            return redirect(session.pop(AFTER_SIGN_IN, "/"))
    return render_template("admin/staff/totp_verify.html", form=form), 200 if not form.errors else 401


@staff.route("/account/totp", methods=["GET", "POST"])
def totp_setup():
    member = current_staff()
    live = live_session()
    if member.totp_enabled_at is not None:
        return redirect("/account")
    if member.totp_secret_ciphertext is None:
        # Made on first view and kept until confirmed, so reloading shows the same secret.
        service.begin_totp_enrolment(_keys(), member)
        db.session.commit()
    secret = service.totp_secret(_keys(), member)
    uri = service.provisioning_uri(secret, member)
    form = CodeForm()
    if form.validate_on_submit():
        try:
            service.confirm_totp_enrolment(db.session, _keys(), member, form.code.data)
        except InputRejected as error:
            db.session.commit()
            show_on_form(form, error, "code")
        else:
            live.row.totp_verified = True
            audit.record("staff.totp_enabled", f"staff:{member.id}", {"totp": False}, {"totp": True})
            db.session.commit()
            flash("Two-factor authentication is on.", "success")
            return redirect(session.pop(AFTER_SIGN_IN, "/account"))
    return render_template(
        "admin/staff/totp_setup.html",
        form=form,
        secret=secret,
        uri=uri,
        qr_code=service.provisioning_qr(uri),
        required=member.role == "superadmin",
    ), (422 if form.errors else 200)


@staff.post("/account/totp/disable")
def totp_disable():
    member = current_staff()
    if member.role == "superadmin":
        abort(403, "Superadmins must keep two-factor authentication on.")
    form = CodeForm()
    if form.validate_on_submit():
        try:
            service.disable_totp(db.session, _keys(), member, form.code.data)
        except InputRejected as error:
            db.session.commit()  # keep the failure count
            show_on_form(form, error, "code")
        else:
            audit.record("staff.totp_disabled", f"staff:{member.id}", {"totp": True}, {"totp": False})
            db.session.commit()
            flash("Two-factor authentication is off.", "info")
            return redirect("/account")
    # The refusal shows next to the code field, on the account page, with a status that says so.
    return render_template("admin/staff/account.html", member=member, form=form), 422


@staff.get("/account")
def account():
    return render_template("admin/staff/account.html", member=current_staff(), form=CodeForm())


@staff.post("/logout")
def logout():
    live = live_session()
    if live is not None:
        service.SESSIONS.end(db.session, live.row.id)
        db.session.commit()
    session.clear()
    flash("You are signed out.", "info")
    return redirect("/login")
