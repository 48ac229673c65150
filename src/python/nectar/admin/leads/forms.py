"""Lead forms: the list's filters (a GET form, no CSRF: it changes nothing) and the writes."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DateField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from nectar.admin.leads.service import NOTE_MAX, LeadFilters
from nectar.admin.listing import date_in_range
from nectar.schema.models.marketing import LEAD_STAGES

STAGE_CHOICES = [SelectChoice(stage, stage.capitalize()) for stage in LEAD_STAGES]


def staff_choices(staff) -> list[SelectChoice]:
    return [SelectChoice(str(member.id), member.display_name or member.email) for member in staff]


class FilterForm(FlaskForm):
    class Meta:
        csrf = False

    q = StringField("Search", validators=[Optional(), Length(max=200)], description="Email, name or company")
    stage = SelectField(
        "Stage", choices=[SelectChoice("", "Any stage"), *STAGE_CHOICES], validators=[Optional()]
    )
    source = StringField("Source", validators=[Optional(), Length(max=100)])
    created_from = DateField("Created from", validators=[Optional(), date_in_range])
    created_to = DateField("Created to", validators=[Optional(), date_in_range])
    assigned = SelectField("Owner", validators=[Optional()], validate_choice=True)

    def __init__(self, *args, staff=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.assigned.choices = [SelectChoice("", "Anyone"), SelectChoice("none", "Nobody")] + staff_choices(
            staff
        )

    def validate_created_to(self, field):
        if field.data and self.created_from.data and field.data < self.created_from.data:
            raise ValidationError("The end date is before the start date.")

    def filters(self) -> LeadFilters:
        return LeadFilters(
            search=(self.q.data or "").strip(),
            stage=self.stage.data or "",
            source=(self.source.data or "").strip(),
            created_from=self.created_from.data,
            created_to=self.created_to.data,
            assigned=self.assigned.data or "",
        )


class StageForm(FlaskForm):
    stage = SelectField("Stage", choices=STAGE_CHOICES)
    # Where to go back to: the board or the lead's page (a name, never a URL: no open redirect).
    back = HiddenField(default="lead")


class AssignForm(FlaskForm):
    staff_id = SelectField("Owner", validate_choice=True)

    def __init__(self, *args, staff=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.staff_id.choices = [SelectChoice("", "Nobody"), *staff_choices(staff)]


class NoteForm(FlaskForm):
    body = TextAreaField(
        "Note", validators=[DataRequired("Write something in the note."), Length(max=NOTE_MAX)]
    )
