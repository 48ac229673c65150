"""Organization forms; the service checks roles and values again on the server."""

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional

ROLE_CHOICES = [("member", "Member"), ("admin", "Admin"), ("owner", "Owner")]


class CreateOrgForm(FlaskForm):
    name = StringField("Organization name", validators=[DataRequired(), Length(min=2, max=200)])


class SettingsForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(min=2, max=200)])
    slug = StringField("Address (slug)", validators=[DataRequired(), Length(max=63)])
    timezone = StringField("Time zone", validators=[DataRequired(), Length(max=64)])


class InviteForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    role = SelectField("Role", choices=ROLE_CHOICES, default="member")


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES)


class ActionForm(FlaskForm):
    """A button-only form (switch, remove, revoke, leave, transfer): just the CSRF token."""

    target = HiddenField(validators=[Optional()])
