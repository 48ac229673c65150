"""The alert rules page: list, create (a webhook's secret is shown once), turn on or off, delete."""

from __future__ import annotations

import uuid

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user

from nectar.core.access import current_org, org_required
from nectar.core.alerts import service
from nectar.core.alerts.forms import AlertRuleForm
from nectar.core.builder.service import list_workflows
from nectar.core.orgs.forms import ActionForm
from nectar.schema.models.alerts import MAX_WINDOW_MINUTES
from nectar.shared.database import db
from nectar.shared.rejection import InputRejected, show_on_form

alert_pages = Blueprint("alert_pages", __name__)


def _page(form: AlertRuleForm, new_secret: str | None = None, status: int = 200):
    workflows = list_workflows(db.session)
    form.workflow_id.choices = [("", "Any workflow")] + [(str(w.id), w.name) for w in workflows]
    return (
        render_template(
            "core/alerts/index.html",
            ctx=current_org(),
            rules=service.list_rules(db.session),
            workflow_names={str(w.id): w.name for w in workflows},
            form=form,
            action=ActionForm(),
            new_secret=new_secret,
            target_help=service.TARGET_HELP,
            limits={
                "name": service.NAME_MAX,
                "target": service.TARGET_MAX,
                "threshold": service.MAX_THRESHOLD,
                "window_minutes": MAX_WINDOW_MINUTES,
            },
        ),
        status,
    )


@alert_pages.get("/org/alerts")
@org_required()
def index():
    return _page(AlertRuleForm(formdata=None))


@alert_pages.post("/org/alerts")
@org_required("admin")
def create():
    form = AlertRuleForm()
    if not form.validate_on_submit():
        abort(400, "The form expired; reload the page and try again.")
    keys = current_app.config["NECTAR_KEY_RING"]
    try:
        rule, secret = service.create_rule(
            db.session, current_org(), keys, form.rule_data(), current_user.user.id
        )
    except InputRejected as invalid:
        db.session.rollback()
        form.form_errors.extend(show_on_form(form, invalid))
        return _page(form, status=422)
    db.session.commit()
    flash(f"Alert rule “{rule.name}” created.", "success")
    if secret is not None:
        return _page(AlertRuleForm(formdata=None), new_secret=secret)
    return redirect(url_for("alert_pages.index"))


@alert_pages.post("/org/alerts/<uuid:rule_id>/enabled")
@org_required("admin")
def set_enabled(rule_id: uuid.UUID):
    form = ActionForm()
    if not form.validate_on_submit() or form.target.data not in ("true", "false"):
        abort(400, "The form expired; reload the page and try again.")
    rule = service.update_rule(
        db.session, current_org(), service.get_rule(db.session, rule_id), {"enabled": form.target.data}
    )
    db.session.commit()
    flash(f"Alert rule “{rule.name}” turned {'on' if rule.enabled else 'off'}.", "info")
    return redirect(url_for("alert_pages.index"))


@alert_pages.post("/org/alerts/<uuid:rule_id>/delete")
@org_required("admin")
def delete(rule_id: uuid.UUID):
    if not ActionForm().validate_on_submit():
        abort(400, "The form expired; reload the page and try again.")
    rule = service.get_rule(db.session, rule_id)
    service.delete_rule(db.session, current_org(), rule.id)
    db.session.commit()
    flash(f"Alert rule “{rule.name}” deleted.", "info")
    return redirect(url_for("alert_pages.index"))
