"""The contact form. Flask-WTF adds the CSRF token; `website` is the honeypot."""

from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from nectar.marketing.addresses import email_field
from nectar.schema.models import Lead
from nectar.schema.models.columns import max_length

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
UTM_MAX = 200  # each is kept in the lead's utm document
MESSAGE_MAX = 5000  # what sales read in one go; the column takes any length
NAME_MAX = max_length(Lead.name)
COMPANY_MAX = max_length(Lead.company)


def _utm_field():
    return HiddenField(validators=[Optional(), Length(max=UTM_MAX)])


class ContactForm(FlaskForm):
    name = StringField(
        "Your name",
        validators=[
            DataRequired("Tell us your name."),
            Length(max=NAME_MAX, message=f"Keep it to {NAME_MAX} characters."),
        ],
    )
    email = email_field("Work email", required_message="Enter your email address, so we can answer.")
    company = StringField(
        "Company",
        validators=[Optional(), Length(max=COMPANY_MAX, message=f"Keep it to {COMPANY_MAX} characters.")],
    )
    message = TextAreaField(
        "How can we help?",
        validators=[
            DataRequired("Write a few words about what you need."),
            Length(max=MESSAGE_MAX, message=f"Keep the message to {MESSAGE_MAX} characters."),
        ],
    )
    source = HiddenField(validators=[Optional(), Length(max=max_length(Lead.source))])
    utm_source = _utm_field()
    utm_medium = _utm_field()
    utm_campaign = _utm_field()
    utm_term = _utm_field()
    utm_content = _utm_field()
    # Hidden from people by CSS; bots that fill every field give themselves away.
    website = StringField("Leave this field empty", validators=[Optional()])

    def utm(self) -> dict[str, str]:
        return {
            name: getattr(self, name).data.strip()
            for name in UTM_FIELDS
            if (getattr(self, name).data or "").strip()
        }
