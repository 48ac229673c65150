"""Newsletter forms. Flask-WTF adds the CSRF token."""

from flask_wtf import FlaskForm
from wtforms import HiddenField
from wtforms.validators import Length, Optional

from nectar.marketing.addresses import email_field


class NewsletterForm(FlaskForm):
    email = email_field("Email")
    source = HiddenField(validators=[Optional(), Length(max=100)])
