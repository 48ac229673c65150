"""Billing forms. Flask-WTF adds the CSRF token; the service checks the plan against the catalogue."""

from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import DataRequired, Length, Optional

from nectar.marketing.addresses import email_field


class CheckoutForm(FlaskForm):
    plan = HiddenField(validators=[DataRequired("Choose a plan."), Length(max=40)])
    email = email_field("Work email")
    organization_name = StringField(
        "Organization name",
        validators=[
            DataRequired("Name your organization; you can change it later."),
            Length(min=2, max=200, message="Use 2 to 200 characters."),
        ],
    )
    # Drawn anew for each page view: a double click sends the same one, so the same checkout.
    nonce = HiddenField(validators=[Optional(), Length(max=64)])


class PortalForm(FlaskForm):
    email = email_field("Email you subscribed with")


class ConfirmForm(FlaskForm):
    """A button that needs nothing but the CSRF token (pay in the test checkout, open the portal)."""
