"""The alert rule form; the service checks every value again (alerts/service.py)."""

from flask_wtf import FlaskForm
from wtforms import SelectField, StringField
from wtforms.validators import Optional

from nectar.schema.models.alerts import ALERT_CHANNELS


class AlertRuleForm(FlaskForm):
    name = StringField("Name", validators=[Optional()])
    workflow_id = SelectField("Workflow", validate_choice=False, validators=[Optional()])
    threshold = StringField("Failed runs", default="1", validators=[Optional()])
    window_minutes = StringField("Within minutes", default="60", validators=[Optional()])
    channel = SelectField(
        "Tell", choices=list(ALERT_CHANNELS), validate_choice=False, validators=[Optional()]
    )
    target = StringField("Target", validators=[Optional()])

    def rule_data(self) -> dict:
        """The fields as the service reads them."""
        return {
            name: getattr(self, name).data
            for name in ("name", "workflow_id", "threshold", "window_minutes", "channel", "target")
        }
