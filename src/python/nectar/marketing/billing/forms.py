"""Billing forms. Flask-WTF adds the CSRF token; the service checks the plan against the catalogue."""

from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import DataRequired, Length, Optional

from nectar.marketing.addresses import email_field
from nectar.schema.models import Organization, Subscription
from nectar.schema.models.columns import max_length

# Kept with the subscription, then given to core for the organization: both must take it.
ORGANIZATION_NAME_MAX = min(max_length(Subscription.organization_name), max_length(Organization.name))


class CheckoutForm(FlaskForm):
    plan = HiddenField(validators=[DataRequired("Choose a plan."), Length(max=max_length(Subscription.plan))])
    email = email_field("Work email")
    organization_name = StringField(
        "Organization name",
        validators=[
            DataRequired("Name your organization; you can change it later."),
            Length(min=2, max=ORGANIZATION_NAME_MAX, message=f"Use 2 to {ORGANIZATION_NAME_MAX} characters."),
        ],
    )
    # Drawn anew for each page view: a double click sends the same one, so the same checkout.
    nonce = HiddenField(validators=[Optional(), Length(max=64)])


class PortalForm(FlaskForm):
    email = email_field("Email you subscribed with")


class ConfirmForm(FlaskForm):
    """A button that needs nothing but the CSRF token (pay in the test checkout, open the portal)."""
