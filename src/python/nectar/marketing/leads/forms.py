"""The contact form. Flask-WTF adds the CSRF token; `website` is the honeypot."""

from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from nectar.marketing.addresses import email_field

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


def _utm_field():
    return HiddenField(validators=[Optional(), Length(max=200)])


class ContactForm(FlaskForm):
    name = StringField(
        "Your name",
        validators=[
            DataRequired("Tell us your name."),
            Length(max=200, message="Keep it under 200 characters."),
        ],
    )
    email = email_field("Work email", required_message="Enter your email address, so we can answer.")
    company = StringField(
        "Company", validators=[Optional(), Length(max=200, message="Keep it under 200 characters.")]
    )
    message = TextAreaField(
        "How can we help?",
        validators=[
            DataRequired("Write a few words about what you need."),
            Length(max=5000, message="Keep the message under 5000 characters."),
        ],
    )
    source = HiddenField(validators=[Optional(), Length(max=100)])
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
