"""Newsletter and campaign email as marketing composes it: Markdown body, optional template around
it, and a one-click unsubscribe (RFC 8058) in the body and the headers of every message.

Admin uses this to preview and test-send what staff write; marketing's worker uses it to send
campaigns, so a preview and a real send are made by the same code.
"""

from __future__ import annotations

import html
import re
import uuid
from dataclasses import dataclass

from email_validator import EmailNotValidError
from sqlalchemy import text
from sqlalchemy.orm import Session

from nectar.marketing.addresses import deliverable_address
from nectar.shared.content import render_markdown
from nectar.shared.mail import Email, queue_email, unsubscribe_headers
from nectar.shared.rejection import InputRejected
from nectar.shared.tokens import make_token

CAMPAIGN_CATEGORY = "campaign"
TEST_CATEGORY = "campaign_test"
UNSUBSCRIBE_PURPOSE = "newsletter-unsubscribe"
UNSUBSCRIBE_PATH = "/newsletter/unsubscribe/"
# Unsubscribe links sit in mailboxes for years and must keep working.
UNSUBSCRIBE_MAX_AGE = 10 * 365 * 24 * 3600
# Where a template puts the campaign's body: `{{ content }}` (any spacing) or `{content}`.
CONTENT_PLACEHOLDER = re.compile(r"\{\{\s*content\s*\}\}|\{content\}")
FOOTER_TEXT = "You receive this because you subscribed to the Nectar Studio newsletter."


class CampaignNotFound(LookupError):
    """No campaign has that id."""


def unsubscribe_token(secret_key: str, email: str) -> str:
    """A signed token naming `email`; presenting it (GET page or one-click POST) unsubscribes it."""
    return make_token(secret_key, UNSUBSCRIBE_PURPOSE, {"e": email.lower()})


def unsubscribe_url(base_url: str, secret_key: str, email: str) -> str:
    """The one-click unsubscribe address for `email` on the marketing site at `base_url`."""
    return f"{base_url.rstrip('/')}{UNSUBSCRIBE_PATH}{unsubscribe_token(secret_key, email)}"


def wrap_in_template(template_markdown: str | None, body_markdown: str) -> str:
    """The campaign's Markdown placed where the template says; a template without a placeholder
    gets the body appended, so no campaign text is ever dropped."""
    if not template_markdown:
        return body_markdown
    if CONTENT_PLACEHOLDER.search(template_markdown):
        return CONTENT_PLACEHOLDER.sub(lambda _: body_markdown, template_markdown)
    return f"{template_markdown}\n\n{body_markdown}"


@dataclass(frozen=True)
class NewsletterMessage:
    """One message rendered once, then addressed to each recipient with their own unsubscribe link."""

    subject: str
    body_text: str
    body_html: str

    @classmethod
    def from_markdown(cls, subject: str, body_markdown: str) -> NewsletterMessage:
        return cls(subject=subject, body_text=body_markdown.strip(), body_html=render_markdown(body_markdown))

    def to(
        self,
        to_address: str,
        unsubscribe_url: str,
        *,
        category: str = CAMPAIGN_CATEGORY,
        dedupe_key: str | None = None,
        campaign_id: uuid.UUID | None = None,
    ) -> Email:
        text_body = f"{self.body_text}\n\n--\n{FOOTER_TEXT}\nUnsubscribe: {unsubscribe_url}\n"
        html_body = (
            '<!doctype html><html><body><div class="newsletter">'
            f"{self.body_html}"
            f'<hr><p><small>{FOOTER_TEXT} <a href="{html.escape(unsubscribe_url, quote=True)}">Unsubscribe</a>.'
            "</small></p></div></body></html>"
        )
        return Email(
            to=to_address,
            subject=self.subject,
            body_text=text_body,
            body_html=html_body,
            category=category,
            headers=unsubscribe_headers(unsubscribe_url),
            dedupe_key=dedupe_key,
            campaign_id=campaign_id,
        )


def compose_campaign_email(
    subject: str,
    body_markdown: str,
    to_address: str,
    unsubscribe_url: str,
    *,
    category: str = CAMPAIGN_CATEGORY,
    dedupe_key: str | None = None,
) -> Email:
    """The email one subscriber gets: the Markdown body as sanitised HTML and as text, an
    unsubscribe link in both, and the List-Unsubscribe / List-Unsubscribe-Post headers."""
    message = NewsletterMessage.from_markdown(subject, body_markdown)
    return message.to(to_address, unsubscribe_url, category=category, dedupe_key=dedupe_key)


def campaign_markdown(session: Session, campaign_id: uuid.UUID | str) -> tuple[str, str]:
    """A stored campaign's subject and its full Markdown (wrapped in its template, if it has one)."""
    row = session.execute(
        text(
            "SELECT c.subject, c.body_markdown, t.body_markdown AS template FROM campaigns c "
            "LEFT JOIN email_templates t ON t.id = c.template_id WHERE c.id = :id"
        ),
        {"id": str(campaign_id)},
    ).one_or_none()
    if row is None:
        raise CampaignNotFound(f"no campaign {campaign_id}")
    return row.subject, wrap_in_template(row.template, row.body_markdown)


def queue_test_send(
    session: Session,
    campaign_id: uuid.UUID | str,
    to_address: str,
    *,
    secret_key: str | None = None,
    base_url: str | None = None,
) -> uuid.UUID:
    """Queues one copy of a stored campaign to `to_address` (category "campaign_test", subject
    marked "[Test]") in the session's transaction, and returns the outbox id. It is not counted
    in the campaign's sends.

    The unsubscribe link is signed with `secret_key` and points at `base_url`; called inside a
    Flask app (admin's), they default to that app's SECRET_KEY and its MARKETING_API_URL. The link
    works on the marketing site when both services share SECRET_KEY (the dev launcher does so).
    Raises InputRejected or CampaignNotFound.
    """
    try:
        address = deliverable_address(to_address)
    except EmailNotValidError as error:
        raise InputRejected(str(error), field="to_address") from None
    if secret_key is None or base_url is None:
        from flask import current_app

        from nectar.shared.config import Service

        secret_key = secret_key or current_app.secret_key
        base_url = base_url or current_app.config["NECTAR_SETTINGS"].service_urls[Service.MARKETING]
    subject, body = campaign_markdown(session, campaign_id)
    email = compose_campaign_email(
        f"[Test] {subject}",
        body,
        address,
        unsubscribe_url(base_url, secret_key, address),
        category=TEST_CATEGORY,
    )
    return queue_email(session, email)
