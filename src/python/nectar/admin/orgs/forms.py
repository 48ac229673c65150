"""Organization actions."""

from flask_wtf import FlaskForm
from wtforms import SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from nectar.core.contract.plans import FEATURE_NAMES, LIMIT_NAMES


class SuspendForm(FlaskForm):
    reason = TextAreaField(
        "Reason (the organization's members will see it)",
        validators=[DataRequired("Give a reason: members see it."), Length(max=500)],
    )


OVERRIDE_CHOICES = [
    *((name, f"Limit: {name.replace('_', ' ')}") for name in LIMIT_NAMES),
    *((name, f"Feature: {name.replace('_', ' ')}") for name in FEATURE_NAMES),
]


class OverrideForm(FlaskForm):
    """Raise one of the plan's limits, or grant a feature, for this organization."""

    name = SelectField("Limit or feature", choices=OVERRIDE_CHOICES)
    value = StringField(
        "New limit (for a limit; a feature is granted)", validators=[Optional(), Length(max=12)]
    )
    reason = TextAreaField(
        "Why (kept in the audit log and shown here)",
        validators=[DataRequired("Say why: the next person to look will ask."), Length(max=500)],
    )
