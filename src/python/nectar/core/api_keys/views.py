"""API key pages: list, create with scopes and an expiry (the token is shown once), revoke."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user

from nectar.core.access import current_org, org_required
from nectar.core.api_keys import service
from nectar.core.api_keys.forms import NewKeyForm
from nectar.core.contract.plans import Feature
from nectar.core.orgs.forms import ActionForm
from nectar.core.plans import FeatureNotIncluded, lacking
from nectar.shared.database import db
from nectar.shared.web import form_status

api_keys = Blueprint("api_keys", __name__)


@api_keys.get("/org/api-keys")
@org_required()
def index(new_token: str | None = None, new_key_form: NewKeyForm | None = None):
    new_key_form = new_key_form or NewKeyForm(formdata=None)
    page = render_template(
        "core/api_keys/index.html",
        ctx=current_org(),
        keys=service.list_keys(db.session),
        now=datetime.now(UTC),
        form=ActionForm(formdata=None),
        new_key_form=new_key_form,
        new_token=new_token,
        # Why the organization cannot create keys (its plan), shown instead of the form; None when it can.
        not_included=_not_included(),
    )
    return page, form_status(new_key_form)


@api_keys.post("/org/api-keys")
@org_required("admin")
def create():
    form = NewKeyForm()
    if not form.validate_on_submit():
        return index(new_key_form=form)
    try:
        key, token = service.create_key(
            db.session,
            current_org(),
            current_user.user.id,
            form.target.data,
            form.scopes.data,
            form.expires_at(),
        )
    except (ValueError, FeatureNotIncluded) as error:
        form.target.errors.append(str(error))
        return index(new_key_form=form)
    db.session.commit()
    flash(f"Key “{key.name}” created. Copy it now: it will not be shown again.", "success")
    return index(new_token=token)


@api_keys.post("/org/api-keys/<uuid:key_id>/revoke")
@org_required("admin")
def revoke(key_id: uuid.UUID):
    if not ActionForm().validate_on_submit():
        abort(400, "The form expired; reload the page and try again.")
    key = service.revoke_key(db.session, current_org(), key_id)
    db.session.commit()
    flash(f"Key “{key.name}” revoked.", "info")
    return redirect(url_for("api_keys.index"))


def _not_included() -> str | None:
    org = current_org().org
    refusal = lacking(org.plan, org.plan_overrides, Feature.API_KEYS)
    return None if refusal is None else str(refusal)
