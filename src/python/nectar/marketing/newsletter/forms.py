"""Newsletter forms. Flask-WTF adds the CSRF token."""

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField
from wtforms.validators import DataRequired, Length, Optional

from nectar.marketing.addresses import DeliverableAddress


class NewsletterForm(FlaskForm):
    email = EmailField(
        "Email",
        validators=[
            DataRequired("Enter your email address."),
            Length(max=320, message="That address is too long."),
            DeliverableAddress(),
        ],
    )
    source = HiddenField(validators=[Optional(), Length(max=100)])
