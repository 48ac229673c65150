"""The organization's variables and secrets page: list, set (create or replace by name), delete."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for

from nectar.core.access import current_org, org_required
from nectar.core.orgs.forms import ActionForm
from nectar.core.variables import service
from nectar.core.variables.forms import SecretForm, VariableForm
from nectar.core.variables.service import SECRETS, VARIABLES
from nectar.shared.database import db
from nectar.shared.rejection import InputRejected
from nectar.shared.web import form_status

variable_pages = Blueprint("variable_pages", __name__)


@variable_pages.get("/org/variables")
@org_required()
def index(variable_form: VariableForm | None = None, secret_form: SecretForm | None = None):
    variables = service.listed(db.session, VARIABLES)
    if variable_form is None:
        variable_form = VariableForm(formdata=None)
        editing = next((v for v in variables if v.name == request.args.get("edit")), None)
        if editing is not None:  # "Edit": the form filled in with the variable as it is
            variable_form.name.data, variable_form.value.data = editing.name, editing.value
    secret_form = secret_form or SecretForm(formdata=None, name=request.args.get("replace", ""))
    page = render_template(
        "core/variables/index.html",
        ctx=current_org(),
        variables=variables,
        secrets=service.listed(db.session, SECRETS),
        variable_form=variable_form,
        secret_form=secret_form,
        form=ActionForm(formdata=None),
        limits=service,
    )
    return page, form_status(variable_form, secret_form)


def _put(form, kind, keys=None) -> bool:
    """Sets the form's name and value; False with each field's messages next to it if refused."""
    valid = form.validate_on_submit()  # the CSRF token, and what is required
    name, value = (form.name.data or "").strip(), form.value.data or ""
    try:
        if not valid:
            raise service.rejected(service.problems_of(kind, name, value))
        _row, created = service.put(db.session, current_org(), kind, name, value, keys)
    except InputRejected as invalid:
        for problem in invalid.problems:
            field = form.name if problem.path == "/name" else form.value
            if not field.errors:  # "Name the variable." says enough about an empty one
                field.errors = [*field.errors, problem.message]
        return False
    db.session.commit()
    flash(f"{kind.label.capitalize()} {form.name.data} {'created' if created else 'updated'}.", "success")
    return True


@variable_pages.post("/org/variables")
@org_required("admin")
def set_variable():
    form = VariableForm()
    if not _put(form, VARIABLES):
        return index(variable_form=form)
    return redirect(url_for("variable_pages.index"))


@variable_pages.post("/org/secrets")
@org_required("admin")
def set_secret():
    form = SecretForm()
    if not _put(form, SECRETS, current_app.config["NECTAR_KEY_RING"]):
        form.value.data = ""  # a refused secret is not sent back to the browser
        return index(secret_form=form)
    return redirect(url_for("variable_pages.index"))


@variable_pages.post("/org/variables/<name>/delete")
@org_required("admin")
def delete_variable(name: str):
    return _delete(VARIABLES, name)


@variable_pages.post("/org/secrets/<name>/delete")
@org_required("admin")
def delete_secret(name: str):
    return _delete(SECRETS, name)


def _delete(kind, name: str):
    if not ActionForm().validate_on_submit():
        abort(400, "The form expired; reload the page and try again.")
    try:
        service.delete(db.session, current_org(), kind, name)
    except LookupError:
        abort(404)
    db.session.commit()
    flash(f"{kind.label.capitalize()} {name} deleted.", "info")
    return redirect(url_for("variable_pages.index"))
