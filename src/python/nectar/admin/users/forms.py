"""Forms for customer accounts. Core validates for real (through its contract); these bound sizes."""

import uuid

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, StringField
from wtforms.validators import DataRequired, Length, Optional


class UserForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    display_name = StringField("Name", validators=[Optional(), Length(max=200)])


class CreateUserForm(UserForm):
    # One id per form shown: submitting twice (or core retrying) creates one account, not two.
    request_id = HiddenField(default=lambda: str(uuid.uuid4()), validators=[DataRequired(), Length(max=64)])
