"""Account forms. Flask-WTF adds the CSRF token; the service functions do the real validation."""

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Optional

from nectar.schema.models import User
from nectar.schema.models.columns import max_length
from nectar.shared.bad_input import MAX_EMAIL_LENGTH
from nectar.shared.passwords import MAX_LENGTH, MIN_LENGTH

NEW_PASSWORD = [
    DataRequired(),
    Length(min=MIN_LENGTH, message=f"Use at least {MIN_LENGTH} characters."),
    Length(max=MAX_LENGTH, message=f"Use at most {MAX_LENGTH} characters."),
]
REPEATED_PASSWORD = [
    DataRequired(),
    Length(max=MAX_LENGTH, message=f"Use at most {MAX_LENGTH} characters."),
    EqualTo("password", "The passwords differ."),
]


class SignUpForm(FlaskForm):
    """Sign-up starts with the address alone; the emailed link leads to NewAccountForm."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=MAX_EMAIL_LENGTH)])


class NewAccountForm(FlaskForm):
    """The account's name and password, once an emailed link (sign-up, invitation) proved the address."""

    display_name = StringField(
        "Your name", validators=[Optional(), Length(max=max_length(User.display_name))]
    )
    password = PasswordField("Password", validators=NEW_PASSWORD)
    confirm = PasswordField("Repeat the password", validators=REPEATED_PASSWORD)


class SignInForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=MAX_EMAIL_LENGTH)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_LENGTH)])
    next = HiddenField()


class ForgotPasswordForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=MAX_EMAIL_LENGTH)])


class ResetPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=NEW_PASSWORD)
    confirm = PasswordField("Repeat it", validators=REPEATED_PASSWORD)
