"""Organization actions."""

from flask_wtf import FlaskForm
from wtforms import TextAreaField
from wtforms.validators import DataRequired, Length


class SuspendForm(FlaskForm):
    reason = TextAreaField(
        "Reason (the organization's members will see it)",
        validators=[DataRequired("Give a reason: members see it."), Length(max=500)],
    )
