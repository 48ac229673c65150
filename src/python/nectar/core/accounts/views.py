"""Account pages: sign up, sign in and out, verify email, reset a forgotten password."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from nectar.core.access import open_org_after_sign_in
from nectar.core.accounts import service
from nectar.core.accounts.forms import (
    ForgotPasswordForm,
    NewAccountForm,
    ResetPasswordForm,
    SignInForm,
    SignUpForm,
)
from nectar.core.extensions import login_manager
from nectar.shared.database import db
from nectar.shared.rejection import InputRejected, show_on_form
from nectar.shared.tokens import TokenInvalid
from nectar.shared.web import external_url, form_status, safe_next_path

accounts = Blueprint("accounts", __name__)


class SignedInUser:
    """What Flask-Login keeps for a request: the user and the browser session row that names them."""

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def __init__(self, user, session_id):
        self.user = user
        self.session_id = session_id

    def get_id(self) -> str:
        return str(self.session_id)


@login_manager.user_loader
def _load_signed_in_user(session_id: str):
    found = service.SESSIONS.load(db.session, session_id)
    if found is None:
        return None
    browser, user = found
    return SignedInUser(user, browser.id)


def _verify_link(token: str) -> str:
    return external_url("accounts.verify_email", token=token)


def _address() -> str | None:
    return request.remote_addr


def begin_session(user) -> None:
    session.clear()  # a fresh session at sign-in: nothing from before carries over
    browser = service.SESSIONS.start(db.session, user, _address(), request.user_agent.string)
    db.session.commit()
    login_user(SignedInUser(user, browser.id))


# The same answer whether or not the address has an account (the email differs): no account probing.
CHECK_EMAIL = (
    "We sent a message to that address with the next step. It can take a minute to arrive; "
    "the link in it works for 48 hours."
)


@accounts.route("/signup", methods=["GET", "POST"])
def signup():
    form = SignUpForm()
    if form.validate_on_submit():
        links = service.SignUpLinks(
            finish=lambda token: external_url("accounts.finish_signup", token=token),
            sign_in=external_url("accounts.login"),
            forgot_password=external_url("accounts.forgot_password"),
        )
        try:
            service.request_signup(db.session, form.email.data, links)
        except InputRejected as error:
            show_on_form(form, error, "email")
        else:
            db.session.commit()
            return render_template(
                "core/accounts/message.html", title="Check your email", message=CHECK_EMAIL
            )
    return render_template("core/accounts/signup.html", form=form), form_status(form)


@accounts.route("/signup/finish", methods=["GET", "POST"])
def finish_signup():
    token = request.args.get("token", "")
    try:
        email = service.signup_email(db.session, current_app.secret_key, token)
    except TokenInvalid as invalid:
        return (
            render_template("core/accounts/message.html", title="Link not valid", message=str(invalid)),
            400,
        )
    form = NewAccountForm()
    if form.validate_on_submit():
        try:
            user = service.create_verified_account(
                db.session, email, form.password.data, form.display_name.data
            )
        except InputRejected as error:
            show_on_form(form, error, "password")
        else:
            begin_session(user)
            flash(f"Welcome! Your account for {email} is ready.", "success")
            return redirect(url_for("orgs.create"))
    page = render_template("core/accounts/finish_signup.html", form=form, email=email, token=token)
    return page, form_status(form)


@accounts.route("/login", methods=["GET", "POST"])
def login():
    form = SignInForm(next=request.args.get("next", ""))
    error, locked = None, False
    if form.validate_on_submit():
        try:
            user = service.sign_in(db.session, form.email.data, form.password.data, _address())
        except service.SignInRefused as refused:
            error, locked = str(refused), refused.locked
        else:
            begin_session(user)
            landing = open_org_after_sign_in(user)
            db.session.commit()
            return redirect(safe_next_path(form.next.data, landing))
    status = 429 if locked else (401 if error else form_status(form))
    return render_template("core/accounts/login.html", form=form, error=error), status


@accounts.post("/logout")
@login_required
def logout():
    service.SESSIONS.end(db.session, current_user.session_id)
    db.session.commit()
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("accounts.login"))


@accounts.get("/verify-email")
def verify_email():
    try:
        user = service.verify_email(db.session, current_app.secret_key, request.args.get("token", ""))
    except TokenInvalid as invalid:
        return (
            render_template("core/accounts/message.html", title="Email not confirmed", message=str(invalid)),
            400,
        )
    db.session.commit()
    flash(f"Thanks, {user.email} is confirmed.", "success")
    return redirect(url_for("dashboard.home") if current_user.is_authenticated else url_for("accounts.login"))


@accounts.post("/verify-email/resend")
@login_required
def resend_verification():
    if current_user.user.email_verified_at is None:
        service.send_verification(db.session, current_user.user, _verify_link)
        db.session.commit()
        flash(f"We sent a new confirmation link to {current_user.user.email}.", "info")
    return redirect(url_for("dashboard.home"))


@accounts.route("/forgot-password", methods=["GET", "POST"])
def forgot_password():
    form = ForgotPasswordForm()
    if form.validate_on_submit():
        service.request_password_reset(
            db.session, form.email.data, lambda token: external_url("accounts.reset_password", token=token)
        )
        db.session.commit()
        return render_template(
            "core/accounts/message.html",
            title="Check your email",
            message="If an account uses that address, a link to choose a new password is on its way. It works for an hour.",
        )
    return render_template("core/accounts/forgot.html", form=form), form_status(form)


@accounts.route("/reset-password", methods=["GET", "POST"])
def reset_password():
    token = request.args.get("token", "")
    form = ResetPasswordForm()
    try:
        user = service.user_for_reset(db.session, current_app.secret_key, token)
    except TokenInvalid as invalid:
        return (
            render_template("core/accounts/message.html", title="Link not valid", message=str(invalid)),
            400,
        )
    # An account made for someone (by staff, or after a checkout) has no password yet: its first.
    first_password = user.password_hash is None
    if first_password:
        form.password.label.text = "Password"
    if form.validate_on_submit():
        try:
            service.reset_password(db.session, current_app.secret_key, token, form.password.data)
        except InputRejected as error:
            show_on_form(form, error, "password")
        else:
            db.session.commit()
            logout_user()
            session.clear()
            flash(
                (
                    "Your password is set. Sign in with it."
                    if first_password
                    else "Your password is changed and every session is signed out. Sign in with the new one."
                ),
                "success",
            )
            return redirect(url_for("accounts.login"))
    return render_template(
        "core/accounts/reset.html", form=form, token=token, first_password=first_password
    ), form_status(form)
