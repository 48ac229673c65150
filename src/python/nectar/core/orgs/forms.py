"""Organization forms; the service checks roles and values again on the server."""

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from nectar.schema.models import Organization
from nectar.schema.models.columns import max_length
from nectar.shared.bad_input import MAX_EMAIL_LENGTH

NAME_LENGTH = Length(min=2, max=max_length(Organization.name))

ROLE_CHOICES = [("member", "Member"), ("admin", "Admin"), ("owner", "Owner")]


class CreateOrgForm(FlaskForm):
    name = StringField("Organization name", validators=[DataRequired(), NAME_LENGTH])


class SettingsForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), NAME_LENGTH])
    slug = StringField(
        "Address (slug)", validators=[DataRequired(), Length(max=max_length(Organization.slug))]
    )
    timezone = StringField(
        "Time zone", validators=[DataRequired(), Length(max=max_length(Organization.timezone))]
    )


class InviteForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=MAX_EMAIL_LENGTH)])
    role = SelectField("Role", choices=ROLE_CHOICES, default="member")


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES)


def naming_form(field_id: str, limit: int, missing: str) -> type[FlaskForm]:
    """A form that names something new (an API key, a workflow): one field, posted as `target`
    (the name those pages have always sent), required and at most `limit` characters."""

    class NamingForm(FlaskForm):
        target = StringField(
            "Name",
            id=field_id,
            validators=[DataRequired(missing), Length(max=limit, message=f"Use 1 to {limit} characters.")],
        )

    return NamingForm


class ActionForm(FlaskForm):
    """A button-only form (switch, remove, revoke, leave, transfer): just the CSRF token."""

    target = HiddenField(validators=[Optional()])


class ImportConnectorForm(FlaskForm):
    """An OpenAPI document to import, pasted (or read from a chosen file into the field by the page)."""

    name = StringField("Name", validators=[DataRequired("Name the connector."), Length(max=100)])
    base_url = StringField(
        "Base URL (optional: the document's first server otherwise)",
        validators=[Optional(), Length(max=2000)],
    )
    document = TextAreaField(
        "OpenAPI 3 document (JSON or YAML)",
        validators=[DataRequired("Paste the document or choose its file.")],
    )
