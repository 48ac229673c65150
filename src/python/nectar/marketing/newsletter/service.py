"""The newsletter: double opt-in sign-up, confirmation, one-click unsubscribe, resubscribe.

Links carry signed tokens (nectar.shared.tokens): a confirmation token names the subscriber row and
address and lasts a week; an unsubscribe token names the address and lasts for years. Nothing here
tells a visitor whether an address was already subscribed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from nectar.marketing.contract.campaigns import UNSUBSCRIBE_MAX_AGE, UNSUBSCRIBE_PURPOSE, NewsletterMessage
from nectar.marketing.limits import NEWSLETTER
from nectar.marketing.links import CONFIRM_PURPOSE, Links
from nectar.shared.mail import Email, queue_email
from nectar.shared.tokens import TokenInvalid, read_token

CONFIRM_MAX_AGE = 7 * 24 * 3600
# Staff may write their own welcome email in admin under this template key.
WELCOME_TEMPLATE_KEY = "newsletter_welcome"
DEFAULT_WELCOME_SUBJECT = "Welcome to the Nectar Studio newsletter"
DEFAULT_WELCOME = """\
# Welcome aboard

Thanks for confirming your subscription. About once a month we will send you what is new in
Nectar Studio: product updates, guides to building APIs and workflows, and stories from teams
who run on it.

Nothing to do now. If you ever want to stop, every message has an unsubscribe link at the bottom.
"""


def subscribe(session: Session, links: Links, email: str, source: str | None, address: str | None) -> None:
    """Records a sign-up and sends the confirmation link. A pending address gets the link again; an
    unsubscribed one starts over as pending; a confirmed one gets nothing. The visitor sees the same
    answer in every case. Raises RateLimited (commit anyway, so the attempt counts)."""
    NEWSLETTER.check(session, email, address)
    row = session.execute(
        text(
            "INSERT INTO newsletter_subscribers (email, status, source) VALUES (:email, 'pending', :source) "
            "ON CONFLICT (email) DO UPDATE SET "
            "status = CASE WHEN newsletter_subscribers.status = 'unsubscribed' THEN 'pending' "
            "ELSE newsletter_subscribers.status END, "
            "source = CASE WHEN newsletter_subscribers.status = 'unsubscribed' THEN excluded.source "
            "ELSE newsletter_subscribers.source END, "
            "updated_at = now() "
            "RETURNING id, email, status"
        ),
        {"email": email, "source": source or None},
    ).one()
    if row.status == "pending":
        queue_email(
            session,
            Email(
                to=row.email,
                subject="Confirm your subscription to the Nectar Studio newsletter",
                body_text=(
                    "Someone, hopefully you, asked to receive the Nectar Studio newsletter at this address.\n\n"
                    "To confirm, open this link within 7 days and press the button on the page:\n\n"
                    f"{links.confirm_url(row.id, row.email)}\n\n"
                    "If it was not you, ignore this message: without confirmation you will not hear from us.\n"
                ),
                category="newsletter.confirm",
            ),
        )


@dataclass(frozen=True)
class Confirmation:
    email: str
    newly_confirmed: bool


def read_confirmation(secret_key: str, token: str) -> tuple[uuid.UUID, str]:
    data = read_token(secret_key, CONFIRM_PURPOSE, token, CONFIRM_MAX_AGE)
    try:
        return uuid.UUID(data["s"]), data["e"]
    except (KeyError, TypeError, ValueError):
        raise TokenInvalid("This link is not valid. Check that you copied all of it.") from None


def confirm(session: Session, links: Links, token: str) -> Confirmation:
    """Confirms a pending subscription and queues the welcome email (once: only the change from
    pending does). Raises TokenInvalid for a bad, expired or outdated link."""
    subscriber_id, email = read_confirmation(links.secret_key, token)
    confirmed = session.execute(
        text(
            "UPDATE newsletter_subscribers SET status = 'confirmed', confirmed_at = now(), "
            "unsubscribed_at = NULL, updated_at = now() "
            "WHERE id = :id AND email = :email AND status = 'pending' RETURNING email"
        ),
        {"id": subscriber_id, "email": email},
    ).scalar()
    if confirmed is not None:
        _queue_welcome(session, links, confirmed)
        return Confirmation(confirmed, newly_confirmed=True)
    status = session.execute(
        text("SELECT status FROM newsletter_subscribers WHERE id = :id AND email = :email"),
        {"id": subscriber_id, "email": email},
    ).scalar()
    if status == "confirmed":
        return Confirmation(email, newly_confirmed=False)
    raise TokenInvalid(
        "This confirmation link is no longer valid, because the address was unsubscribed since. "
        "Sign up again to get a new one."
    )


def _queue_welcome(session: Session, links: Links, email: str) -> None:
    template = session.execute(
        text("SELECT subject, body_markdown FROM email_templates WHERE key = :key"),
        {"key": WELCOME_TEMPLATE_KEY},
    ).one_or_none()
    subject, body = (
        (template.subject, template.body_markdown) if template else (DEFAULT_WELCOME_SUBJECT, DEFAULT_WELCOME)
    )
    message = NewsletterMessage.from_markdown(subject, body)
    queue_email(session, message.to(email, links.unsubscribe_url(email), category="newsletter.welcome"))


def read_unsubscribe(secret_key: str, token: str) -> str:
    """The address an unsubscribe token names. Raises TokenInvalid."""
    data = read_token(secret_key, UNSUBSCRIBE_PURPOSE, token, UNSUBSCRIBE_MAX_AGE)
    email = data.get("e") if isinstance(data, dict) else None
    if not isinstance(email, str) or "@" not in email:
        raise TokenInvalid("This link is not valid. Check that you copied all of it.")
    return email


def unsubscribe(session: Session, secret_key: str, token: str) -> str:
    """Unsubscribes the token's address (a no-op when it is not subscribed) and returns it."""
    email = read_unsubscribe(secret_key, token)
    session.execute(
        text(
            "UPDATE newsletter_subscribers SET status = 'unsubscribed', unsubscribed_at = now(), updated_at = now() "
            "WHERE email = :email AND status <> 'unsubscribed'"
        ),
        {"email": email},
    )
    return email


def resubscribe(session: Session, links: Links, token: str, address: str | None) -> str:
    """Starts a new sign-up for the address of an unsubscribe link: it is confirmed by email again."""
    email = read_unsubscribe(links.secret_key, token)
    subscribe(session, links, email, "resubscribe", address)
    return email
