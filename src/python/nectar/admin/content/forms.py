"""Content forms; the service checks slugs, keys, placeholders and states again on the server."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, EmailField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from nectar.schema.models import BlogPost, Campaign, EmailTemplate
from nectar.schema.models.columns import max_length
from nectar.shared.bad_input import MAX_EMAIL_LENGTH

DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
BODY_MAX = 200_000


class PostForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired(), Length(max=max_length(BlogPost.title))])
    slug = StringField(
        "Address (slug)",
        validators=[Optional(), Length(max=max_length(BlogPost.slug))],
        description="The post lives at /blog/<slug>. Left empty, it is made from the title.",
    )
    summary = StringField(
        "Summary",
        validators=[Optional(), Length(max=max_length(BlogPost.summary))],
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
    author_name = StringField("Author", validators=[Optional(), Length(max=max_length(BlogPost.author_name))])


class TemplateForm(FlaskForm):
    key = StringField(
        "Key",
        validators=[DataRequired(), Length(max=max_length(EmailTemplate.key))],
        description="A short name code refers to, e.g. newsletter.",
    )
    name = StringField("Name", validators=[DataRequired(), Length(max=max_length(EmailTemplate.name))])
    subject = StringField(
        "Default subject", validators=[DataRequired(), Length(max=max_length(EmailTemplate.subject))]
    )
    body_markdown = TextAreaField(
        "Body (Markdown)",
        validators=[DataRequired(), Length(max=BODY_MAX)],
        description="Put {content} where each campaign's own text goes.",
    )


class CampaignForm(FlaskForm):
    name = StringField("Name (for staff)", validators=[DataRequired(), Length(max=max_length(Campaign.name))])
    subject = StringField("Subject", validators=[DataRequired(), Length(max=max_length(Campaign.subject))])
    template_id = SelectField("Template", validate_choice=True)
    body_markdown = TextAreaField("Body (Markdown)", validators=[DataRequired(), Length(max=BODY_MAX)])

    def __init__(self, *args, templates=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.template_id.choices = [SelectChoice("", "No template")] + [
            SelectChoice(str(template.id), f"{template.name} ({template.key})") for template in templates
        ]


class TestSendForm(FlaskForm):
    to_address = EmailField("Send a test to", validators=[DataRequired(), Length(max=MAX_EMAIL_LENGTH)])


class ScheduleForm(FlaskForm):
    scheduled_at = DateTimeLocalField(
        "Send at (UTC)", format=DATETIME_FORMATS, validators=[DataRequired("Choose when to send it.")]
    )


class ActionForm(FlaskForm):
    """A button-only form (send now, cancel): just the CSRF token."""
