"""The forms that set a variable or a secret: a name and a value (kept or replaced by name)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField, TextAreaField
from wtforms.validators import InputRequired


class VariableForm(FlaskForm):
    name = StringField("Name", id="variable-name", validators=[InputRequired("Name the variable.")])
    value = TextAreaField("Value", id="variable-value")


class SecretForm(FlaskForm):
    # A password field: the browser neither shows it nor offers to fill it in again.
    name = StringField("Name", id="secret-name", validators=[InputRequired("Name the secret.")])
    value = PasswordField("Value", id="secret-value", validators=[InputRequired("Enter the secret's value.")])
