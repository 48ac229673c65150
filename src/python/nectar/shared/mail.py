"""Queueing email: every service writes to the outbox table; marketing's worker sends it.

Queueing is part of the caller's transaction, so a message exists exactly when the change that
caused it was committed.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    body_text: str
    category: str
    body_html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    dedupe_key: str | None = None


def queue_email(session: Session, email: Email) -> uuid.UUID:
    """Adds `email` to the outbox in the session's transaction and returns its id.

    No RETURNING: core may insert into the outbox but not read it (least privilege).
    """
    message_id = uuid.uuid4()
    session.execute(
        text(
            "INSERT INTO email_outbox (id, to_address, subject, body_text, body_html, headers, category, dedupe_key) "
            "VALUES (:id, :to, :subject, :body_text, :body_html, CAST(:headers AS jsonb), :category, :dedupe_key)"
        ),
        {
            "id": message_id,
            "to": email.to,
            "subject": email.subject,
            "body_text": email.body_text,
            "body_html": email.body_html,
            "headers": json.dumps(email.headers),
            "category": email.category,
            "dedupe_key": email.dedupe_key,
        },
    )
    return message_id
