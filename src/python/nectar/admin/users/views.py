"""Customer accounts across every organization: list, detail, create, edit, deactivate, reset."""

from __future__ import annotations

import uuid

from flask import Blueprint, abort, flash, redirect, render_template, request

from nectar.admin.errors import show_core_error
from nectar.admin.listing import paginate, read_page
from nectar.admin.users import service
from nectar.admin.users.forms import CreateUserForm, UserForm
from nectar.core.contract import CoreRefused, CoreUnavailable
from nectar.schema.models import User
from nectar.shared.database import db

users = Blueprint("users", __name__, url_prefix="/users")


def _user(user_id: uuid.UUID) -> User:
    return db.get_or_404(User, user_id, description="There is no such user.")


@users.get("")
def index():
    filters = service.read_filters(request.args)
    sort = service.sort_of(request.args)
    page = paginate(service.list_statement(filters, sort), read_page(request.args))
    counts = service.organization_counts([user.id for user in page.items])
    return render_template("admin/users/index.html", page=page, filters=filters, sort=sort, counts=counts)


@users.route("/new", methods=["GET", "POST"])
def create():
    form = CreateUserForm()
    status = 200
    if form.validate_on_submit():
        try:
            account = service.create(form.email.data, form.display_name.data, form.request_id.data)
        except (CoreRefused, CoreUnavailable) as error:
            status = show_core_error(error, form)
        else:
            db.session.commit()
            if account.created:
                flash(f"Created {account.email}. Core emailed them a link to choose a password.", "success")
            else:
                flash(f"{account.email} was already created from this form; nothing new was made.", "info")
            return redirect(f"/users/{account.user_id}")
    elif form.errors:
        status = 422
    return render_template("admin/users/new.html", form=form), status


@users.get("/<uuid:user_id>")
def show(user_id: uuid.UUID):
    found = service.detail(user_id)
    if found is None:
        abort(404, "There is no such user.")
    return render_template("admin/users/show.html", detail=found)


@users.route("/<uuid:user_id>/edit", methods=["GET", "POST"])
def edit(user_id: uuid.UUID):
    user = _user(user_id)
    form = UserForm(obj=user) if request.method == "GET" else UserForm()
    status = 200
    if form.validate_on_submit():
        try:
            account = service.update(user, form.email.data, form.display_name.data or "")
        except (CoreRefused, CoreUnavailable) as error:
            status = show_core_error(error, form)
        else:
            db.session.commit()
            flash("Saved." if account else "Nothing changed.", "success" if account else "info")
            return redirect(f"/users/{user_id}")
    elif form.errors:
        status = 422
    return render_template("admin/users/edit.html", form=form, user=user), status


def _action(user_id: uuid.UUID, act, done: str):
    user = _user(user_id)
    try:
        act(user)
    except (CoreRefused, CoreUnavailable) as error:
        show_core_error(error)
    else:
        db.session.commit()
        flash(done.format(email=user.email), "success")
    return redirect(f"/users/{user_id}")


@users.post("/<uuid:user_id>/deactivate")
def deactivate(user_id: uuid.UUID):
    return _action(user_id, service.deactivate, "{email} is deactivated and signed out everywhere.")


@users.post("/<uuid:user_id>/reactivate")
def reactivate(user_id: uuid.UUID):
    return _action(user_id, service.reactivate, "{email} can sign in again.")


@users.post("/<uuid:user_id>/password-reset")
def password_reset(user_id: uuid.UUID):
    return _action(
        user_id,
        service.send_password_reset,
        "Core queued a password-reset email to {email} (at most three an hour per address).",
    )
