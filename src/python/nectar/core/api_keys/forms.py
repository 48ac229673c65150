"""The form that creates an API key: its name, its scopes and when it expires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wtforms import SelectField, SelectMultipleField
from wtforms.validators import DataRequired
from wtforms.widgets import CheckboxInput, ListWidget

from nectar.core.api_keys.service import NAME_MAX, Scope
from nectar.core.orgs.forms import naming_form

LIFETIMES = [("", "Never"), ("30", "In 30 days"), ("90", "In 90 days"), ("365", "In a year")]


class NewKeyForm(naming_form("key-name", NAME_MAX, "Name the key.")):
    scopes = SelectMultipleField(
        "What it may do",
        choices=[(scope.value, f"{scope.value}: {scope.label}") for scope in Scope],
        default=[Scope.READ.value],
        validators=[DataRequired("Choose at least one scope.")],
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
    )
    expires = SelectField("Expires", choices=LIFETIMES, default="")

    def expires_at(self) -> datetime | None:
        """When the chosen lifetime ends, from now; None for a key that never expires."""
        days = self.expires.data
        return datetime.now(UTC) + timedelta(days=int(days)) if days else None
