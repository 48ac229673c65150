"""System: services' health, database, queue and outbox; system settings (superadmin edits)."""

from __future__ import annotations

import json

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request

from nectar.admin.outbox import service as outbox_service
from nectar.admin.staff.access import current_staff, superadmin_required
from nectar.admin.system import service
from nectar.admin.system.forms import SettingForm
from nectar.schema.models import SystemSetting
from nectar.shared.database import db
from nectar.shared.rejection import InputRejected, show_on_form

system = Blueprint("system", __name__, url_prefix="/system")


@system.get("")
def index():
    settings = current_app.config["NECTAR_SETTINGS"]
    return render_template(
        "admin/system/index.html",
        health=service.check_services(settings),
        database=service.database_state(db.session),
        queue=service.queue_depth(db.session),
        outbox=outbox_service.status_counts(db.session),
        settings=service.all_settings(db.session),
    )


@system.route("/settings/<key>", methods=["GET", "POST"])
@superadmin_required
def edit_setting(key: str):
    if not service.KEY_PATTERN.fullmatch(key):
        abort(404, "Setting keys are lower-case letters, digits and _.")
    row = db.session.get(SystemSetting, key)
    known = service.KNOWN_SETTINGS.get(key)
    form = SettingForm()
    if not form.is_submitted():
        form.value.data = json.dumps(row.value if row else (known.example if known else {}), indent=2)
    status = 200
    if form.validate_on_submit():
        try:
            value = service.parse_value(key, form.value.data)
        except InputRejected as error:
            show_on_form(form, error, "value")
        else:
            changed = service.save_setting(db.session, key, value, current_staff().id)
            db.session.commit()
            flash(f"Saved {key}." if changed else f"{key} is unchanged.", "success" if changed else "info")
            return redirect("/system#settings")
    if form.errors:
        status = 422
    return render_template("admin/system/setting.html", key=key, row=row, known=known, form=form), status


@system.get("/settings")
@superadmin_required
def open_setting():
    """The "edit a setting" box on the system page: goes to that key's form."""
    key = request.args.get("key", "").strip().lower()
    if not service.KEY_PATTERN.fullmatch(key):
        flash("Setting keys are lower-case letters, digits and _, starting with a letter.", "error")
        return redirect("/system#settings")
    return redirect(f"/system/settings/{key}")


@system.post("/settings/<key>/delete")
@superadmin_required
def delete_setting(key: str):
    if service.delete_setting(db.session, key):
        db.session.commit()
        flash(f"Deleted {key}; its default applies again.", "success")
    else:
        flash(f"There is no stored {key}.", "info")
    return redirect("/system#settings")
