"""Staff sign-in and two-factor forms."""

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from nectar.shared.bad_input import MAX_EMAIL_LENGTH
from nectar.shared.passwords import MAX_LENGTH


class SignInForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=MAX_EMAIL_LENGTH)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_LENGTH)])
    next = HiddenField()


class CodeForm(FlaskForm):
    code = StringField(
        "Six-digit code from your authenticator app", validators=[DataRequired(), Length(min=6, max=10)]
    )
