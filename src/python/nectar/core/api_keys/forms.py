"""The new-key form; the service checks the name again."""

from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from nectar.core.api_keys.service import NAME_MAX


class NewKeyForm(FlaskForm):
    # Posted as `target`, the name the page has always sent.
    target = StringField(
        "Name",
        id="key-name",
        validators=[
            DataRequired("Name the key."),
            Length(max=NAME_MAX, message=f"Use 1 to {NAME_MAX} characters."),
        ],
    )
