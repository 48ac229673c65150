"""Content forms; the service checks slugs, keys, placeholders and states again on the server."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, EmailField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
BODY_MAX = 200_000


class PostForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired(), Length(max=300)])
    slug = StringField(
        "Address (slug)",
        validators=[Optional(), Length(max=200)],
        description="The post lives at /blog/<slug>. Left empty, it is made from the title.",
    )
    summary = StringField(
        "Summary",
        validators=[Optional(), Length(max=500)],
        description="Shown in the blog index and as the page description.",
    )
    body_markdown = TextAreaField("Body (Markdown)", validators=[DataRequired(), Length(max=BODY_MAX)])
    status = SelectField(
        "Status",
        choices=[SelectChoice("draft", "Draft (hidden)"), SelectChoice("published", "Published")],
        default="draft",
    )
    published_at = DateTimeLocalField(
        "Publish date (UTC)",
        format=DATETIME_FORMATS,
        validators=[Optional()],
        description="A future date schedules the post; left empty, publishing uses the current time.",
    )
    author_name = StringField("Author", validators=[Optional(), Length(max=200)])


class TemplateForm(FlaskForm):
    key = StringField(
        "Key",
        validators=[DataRequired(), Length(max=100)],
        description="A short name code refers to, e.g. newsletter.",
    )
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    subject = StringField("Default subject", validators=[DataRequired(), Length(max=300)])
    body_markdown = TextAreaField(
        "Body (Markdown)",
        validators=[DataRequired(), Length(max=BODY_MAX)],
        description="Put {content} where each campaign's own text goes.",
    )


class CampaignForm(FlaskForm):
    name = StringField("Name (for staff)", validators=[DataRequired(), Length(max=200)])
    subject = StringField("Subject", validators=[DataRequired(), Length(max=300)])
    template_id = SelectField("Template", validate_choice=True)
    body_markdown = TextAreaField("Body (Markdown)", validators=[DataRequired(), Length(max=BODY_MAX)])

    def __init__(self, *args, templates=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.template_id.choices = [SelectChoice("", "No template")] + [
            SelectChoice(str(template.id), f"{template.name} ({template.key})") for template in templates
        ]


class TestSendForm(FlaskForm):
    to_address = EmailField("Send a test to", validators=[DataRequired(), Length(max=320)])


class ScheduleForm(FlaskForm):
    scheduled_at = DateTimeLocalField(
        "Send at (UTC)", format=DATETIME_FORMATS, validators=[DataRequired("Choose when to send it.")]
    )


class ActionForm(FlaskForm):
    """A button-only form (send now, cancel): just the CSRF token."""
