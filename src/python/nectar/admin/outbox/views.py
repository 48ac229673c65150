"""Email outbox pages: messages by status, one message in full, and retrying a failed one."""

from __future__ import annotations

import uuid

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm

from nectar.admin.listing import paginate, read_choice, read_page, read_text
from nectar.admin.outbox import service
from nectar.schema.models import EmailOutbox
from nectar.shared.database import db
from nectar.shared.rejection import InputRejected

outbox = Blueprint("outbox", __name__, url_prefix="/outbox")
PER_PAGE = 50


@outbox.get("/")
def index():
    status = read_choice(request.args, "status", service.STATUSES)
    search = read_text(request.args, "q")
    page = paginate(service.messages_statement(status, search), read_page(request.args), PER_PAGE)
    return render_template(
        "admin/outbox/index.html",
        counts=service.status_counts(db.session),
        status=status,
        search=search,
        page=page,
    )


@outbox.get("/<uuid:message_id>")
def detail(message_id: uuid.UUID):
    message = db.get_or_404(EmailOutbox, message_id, description="There is no such message.")
    return render_template("admin/outbox/detail.html", message=message)


@outbox.post("/<uuid:message_id>/retry")
def retry(message_id: uuid.UUID):
    if not FlaskForm().validate_on_submit():
        abort(400, "The form expired; try again.")
    try:
        message = service.retry(db.session, message_id)
    except LookupError:
        db.session.rollback()
        abort(404, "There is no such message.")
    except InputRejected as error:
        db.session.rollback()
        flash(str(error), "error")
    else:
        db.session.commit()
        flash(f"The message to {message.to_address} is queued again; the sender picks it up next.", "success")
    return redirect(url_for("outbox.detail", message_id=message_id))
