"""Forms for customer accounts. Core validates for real (through its contract); these bound sizes."""

import uuid

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, StringField
from wtforms.validators import DataRequired, Length, Optional

from nectar.schema.models import User
from nectar.schema.models.columns import max_length
from nectar.shared.bad_input import MAX_EMAIL_LENGTH


class UserForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=MAX_EMAIL_LENGTH)])
    display_name = StringField("Name", validators=[Optional(), Length(max=max_length(User.display_name))])


class CreateUserForm(UserForm):
    # One id per form shown: submitting twice (or core retrying) creates one account, not two.
    request_id = HiddenField(default=lambda: str(uuid.uuid4()), validators=[DataRequired(), Length(max=64)])
