"""Lead pages: the filtered list and its CSV export, the pipeline board, one lead, and its writes."""

from __future__ import annotations

import uuid

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)

from nectar.admin import audit
from nectar.admin.leads import service
from nectar.admin.leads.forms import AssignForm, FilterForm, NoteForm, StageForm
from nectar.admin.listing import paginate, read_page
from nectar.admin.staff.access import current_staff
from nectar.schema.models.marketing import LEAD_STAGES
from nectar.shared.database import db
from nectar.shared.rejection import InputRejected
from nectar.shared.web import FORM_REFUSED, form_status

leads = Blueprint("leads", __name__, url_prefix="/leads")
PER_PAGE = 50


def _filter_form() -> FilterForm:
    return FilterForm(formdata=request.args, staff=service.assignable_staff(db.session))


@leads.get("/")
def index():
    form = _filter_form()
    if not form.validate():
        return render_template("admin/leads/index.html", form=form, page=None, counts=None), 400
    filters = form.filters()
    page = paginate(service.leads_statement(filters), read_page(request.args), PER_PAGE)
    return render_template(
        "admin/leads/index.html",
        form=form,
        page=page,
        filters=filters,
        counts=service.stage_counts(db.session),
    )


@leads.get("/export.csv")
def export():
    """The filtered list as CSV, streamed row by row from a server-side cursor. Exporting personal
    data is recorded in the audit log, with the filters used."""
    form = _filter_form()
    if not form.validate():
        errors = "; ".join(f"{form[name].label.text}: {', '.join(e)}" for name, e in form.errors.items())
        abort(400, f"The filters are not valid ({errors}).")
    filters = form.filters()
    statement = service.leads_statement(filters)  # before the audit row: nothing can fail after it
    audit.record("lead.export", target="leads", after={"filters": filters.as_args()})
    db.session.commit()
    rows = service.export_rows(db.session, statement)
    response = Response(stream_with_context(service.csv_lines(rows)), mimetype="text/csv")
    response.headers["Content-Disposition"] = "attachment; filename=leads.csv"
    response.headers["Cache-Control"] = "no-store"
    return response


@leads.get("/board")
def board():
    return render_template(
        "admin/leads/board.html",
        counts=service.stage_counts(db.session),
        columns=service.board(db.session),
        stage_form=StageForm(),
        per_stage=service.BOARD_CARDS,
    )


def _detail(lead_id: uuid.UUID, *, note_form: NoteForm | None = None, status: int = 200):
    try:
        detail = service.lead_detail(db.session, lead_id)
    except LookupError:
        abort(404, "There is no such lead.")
    staff = service.assignable_staff(db.session)
    assign_form = AssignForm(staff=staff, staff_id=str(detail.lead.assigned_staff_id or ""))
    stage_form = StageForm(stage=detail.lead.status)
    page = render_template(
        "admin/leads/detail.html",
        detail=detail,
        stages=LEAD_STAGES,
        stage_form=stage_form,
        assign_form=assign_form,
        note_form=note_form or NoteForm(),
    )
    return page, status


@leads.get("/<uuid:lead_id>")
def detail(lead_id: uuid.UUID):
    return _detail(lead_id)


def _write(success: str, change, *args):
    """Runs one service change, `change(db.session, *args)`, then commits it with its audit row, or
    rolls back and says why."""
    try:
        result = change(db.session, *args)
    except LookupError:
        db.session.rollback()
        abort(404, "There is no such lead.")
    except InputRejected as error:
        db.session.rollback()
        flash(str(error), "error")
        return None
    db.session.commit()
    flash(success, "success")
    return result


@leads.post("/<uuid:lead_id>/stage")
def change_stage(lead_id: uuid.UUID):
    form = StageForm()
    if form.validate_on_submit():
        _write(f"Moved to {form.stage.data}.", service.change_stage, lead_id, form.stage.data)
    else:
        flash("Choose one of the stages.", "error")
    if form.back.data == "board":
        return redirect(url_for("leads.board"))
    return redirect(url_for("leads.detail", lead_id=lead_id))


@leads.post("/<uuid:lead_id>/assign")
def assign(lead_id: uuid.UUID):
    form = AssignForm(staff=service.assignable_staff(db.session))
    if form.validate_on_submit():
        staff_id = uuid.UUID(form.staff_id.data) if form.staff_id.data else None
        _write("Owner saved.", service.assign, lead_id, staff_id)
    else:
        flash("Choose an active staff member who may edit leads.", "error")
    return redirect(url_for("leads.detail", lead_id=lead_id))


@leads.post("/<uuid:lead_id>/notes")
def add_note(lead_id: uuid.UUID):
    form = NoteForm()
    if not form.validate_on_submit():
        return _detail(lead_id, note_form=form, status=form_status(form))
    if _write("Note added.", service.add_note, lead_id, current_staff().id, form.body.data) is None:
        return _detail(lead_id, note_form=form, status=FORM_REFUSED)  # why is flashed above
    return redirect(url_for("leads.detail", lead_id=lead_id) + "#notes")
