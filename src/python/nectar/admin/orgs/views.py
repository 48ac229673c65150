"""Organizations across every tenant: list, detail (members, plan, subscription), suspend, reactivate."""

from __future__ import annotations

import uuid

from flask import Blueprint, abort, flash, redirect, render_template, request

from nectar.admin.errors import show_core_error
from nectar.admin.listing import paginate, read_page
from nectar.admin.orgs import service
from nectar.admin.orgs.forms import OverrideForm, SuspendForm
from nectar.core.contract import PLANS, CoreRefused, CoreUnavailable
from nectar.core.contract.plans import LIMIT_NAMES, Feature
from nectar.schema.models import Organization
from nectar.shared.database import db
from nectar.shared.rejection import InputRejected, show_on_form

orgs = Blueprint("orgs", __name__, url_prefix="/orgs")


def _org(org_id: uuid.UUID) -> Organization:
    return db.get_or_404(Organization, org_id, description="There is no such organization.")


@orgs.get("")
def index():
    filters = service.read_filters(request.args)
    sort = service.sort_of(request.args)
    page = paginate(service.list_statement(filters, sort), read_page(request.args))
    counts = service.member_counts(db.session, [org.id for org in page.items])
    return render_template(
        "admin/orgs/index.html",
        page=page,
        filters=filters,
        sort=sort,
        counts=counts,
        statuses=service.STATUSES,
        plans=PLANS,
    )


def _show(org_id: uuid.UUID, form: SuspendForm, status: int = 200, override_form: OverrideForm | None = None):
    found = service.detail(db.session, org_id)
    if found is None:
        abort(404, "There is no such organization.")
    page = render_template(
        "admin/orgs/show.html",
        detail=found,
        form=form,
        override_form=override_form or OverrideForm(formdata=None),
        limit_names=LIMIT_NAMES,
        features=list(Feature),
    )
    return page, status


@orgs.get("/<uuid:org_id>")
def show(org_id: uuid.UUID):
    return _show(org_id, SuspendForm())


@orgs.post("/<uuid:org_id>/overrides")
def grant_override(org_id: uuid.UUID):
    org = _org(org_id)
    form = OverrideForm()
    if not form.validate_on_submit():
        return _show(org_id, SuspendForm(formdata=None), 422, form)
    try:
        service.grant_override(org, form.name.data, form.value.data, form.reason.data.strip())
    except InputRejected as invalid:
        show_on_form(form, invalid, "value")
        return _show(org_id, SuspendForm(formdata=None), 422, form)
    db.session.commit()
    flash(f"{org.name}: {form.name.data.replace('_', ' ')} overridden; core applies it at once.", "success")
    return redirect(f"/orgs/{org_id}")


@orgs.post("/<uuid:org_id>/overrides/<name>/remove")
def remove_override(org_id: uuid.UUID, name: str):
    org = _org(org_id)
    try:
        service.remove_override(org, name)
    except InputRejected as invalid:
        abort(404, str(invalid))
    db.session.commit()
    flash(f"{org.name}: the {name.replace('_', ' ')} override is removed; the plan applies again.", "success")
    return redirect(f"/orgs/{org_id}")


@orgs.post("/<uuid:org_id>/suspend")
def suspend(org_id: uuid.UUID):
    org = _org(org_id)
    form = SuspendForm()
    if not form.validate_on_submit():
        return _show(org_id, form, 422)
    try:
        service.suspend(org, form.reason.data.strip())
    except (CoreRefused, CoreUnavailable) as error:
        db.session.rollback()
        return _show(org_id, form, show_core_error(error, form))
    db.session.commit()
    flash(f"{org.name} is suspended: its members cannot use it, its API keys and endpoints stop.", "success")
    return redirect(f"/orgs/{org_id}")


@orgs.post("/<uuid:org_id>/reactivate")
def reactivate(org_id: uuid.UUID):
    org = _org(org_id)
    try:
        service.reactivate(org)
    except (CoreRefused, CoreUnavailable) as error:
        show_core_error(error)
    else:
        db.session.commit()
        flash(f"{org.name} is active again.", "success")
    return redirect(f"/orgs/{org_id}")
