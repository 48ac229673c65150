"""The new-workflow form; the service checks the name again."""

from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from nectar.core.builder.service import NAME_MAX


class NewWorkflowForm(FlaskForm):
    # Posted as `target`, the name the page has always sent.
    target = StringField(
        "Name",
        id="wf-name",
        validators=[
            DataRequired("Name the workflow."),
            Length(max=NAME_MAX, message=f"Use 1 to {NAME_MAX} characters."),
        ],
    )
