"""Email addresses visitors type into our forms: accepted only when our outbox can deliver to them.

Plain SMTP (no SMTPUTF8, which many servers lack) cannot carry letters outside ASCII before the @,
so such an address is refused next to its field rather than failing later in the outbox. A domain
in another script is kept, written in its ASCII form (xn--...), which every server takes.
"""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from wtforms import EmailField
from wtforms.validators import DataRequired, Length, ValidationError

from nectar.shared.bad_input import MAX_EMAIL_LENGTH

NOT_AN_ADDRESS = "Enter an email address like name@example.com."
NO_ADDRESS = "Enter your email address."
NOT_ASCII = (
    "Our email cannot reach addresses with accented or non-Latin letters before the @. "
    "Please use another address."
)


def deliverable_address(typed: str) -> str:
    """`typed` in ASCII form if plain SMTP can deliver to it; raises EmailNotValidError otherwise."""
    if len(typed) > MAX_EMAIL_LENGTH:  # refused before the validator, which slows down on huge input
        raise EmailNotValidError(f"An email address is at most {MAX_EMAIL_LENGTH} characters.")
    return validate_email(typed.strip(), check_deliverability=False, allow_smtputf8=False).ascii_email


class DeliverableAddress:
    """WTForms validator: a well-formed address that plain SMTP can deliver to. On success the
    field's data becomes the address in ASCII form (the domain's letters in xn-- form, lower case)."""

    def __init__(self, message: str = NOT_AN_ADDRESS):
        self.message = message

    def __call__(self, form, field) -> None:
        typed = (field.data or "").strip()
        try:
            field.data = deliverable_address(typed)
        except EmailNotValidError:
            local_part = typed.rpartition("@")[0]
            raise ValidationError(
                NOT_ASCII if local_part and not local_part.isascii() else self.message
            ) from None


def email_field(label: str, required_message: str = NO_ADDRESS) -> EmailField:
    """A required email field for marketing's forms: at most MAX_EMAIL_LENGTH characters and deliverable."""
    return EmailField(
        label,
        validators=[
            DataRequired(required_message),
            Length(max=MAX_EMAIL_LENGTH, message="That address is too long."),
            DeliverableAddress(),
        ],
    )
