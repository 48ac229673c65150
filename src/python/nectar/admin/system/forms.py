"""System settings form: the value as JSON text, parsed and validated by the service."""

from flask_wtf import FlaskForm
from wtforms import TextAreaField
from wtforms.validators import DataRequired, Length


class SettingForm(FlaskForm):
    value = TextAreaField("Value (a JSON object)", validators=[DataRequired(), Length(max=20_000)])
