"""The email outbox as staff see it: messages by status, searched by address or category, and
retrying a failed one (marketing's sender picks up pending messages that are due, so a retry is:
pending again, due now, with a fresh set of attempts)."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from nectar.admin import audit
from nectar.admin.listing import capped_counts, like_pattern
from nectar.schema.models import EmailOutbox
from nectar.shared.rejection import InputRejected

STATUSES = ("pending", "sending", "sent", "failed")


def status_counts(session: Session) -> dict[str, int]:
    """Messages per status, each counted up to TOTAL_CAP through the (status, created_at) index, so a
    long history of sent mail costs nothing per page view."""
    return capped_counts(session, EmailOutbox.status, STATUSES)


def messages_statement(status: str | None = None, search: str | None = None) -> Select:
    """Messages newest first, optionally of one status, or whose address or category contains
    `search`."""
    statement = select(EmailOutbox).order_by(EmailOutbox.created_at.desc(), EmailOutbox.id.desc())
    if status:
        statement = statement.where(EmailOutbox.status == status)
    if search:
        pattern = like_pattern(search)
        statement = statement.where(
            or_(
                EmailOutbox.to_address.ilike(pattern, escape="\\"),
                EmailOutbox.category.ilike(pattern, escape="\\"),
            )
        )
    return statement


def retry(session: Session, message_id: uuid.UUID) -> EmailOutbox:
    """Queues a failed message again: pending, due now, attempts back to zero (so it gets every
    retry the sender allows). The last error stays until the next attempt replaces it."""
    message = session.scalars(
        select(EmailOutbox).where(EmailOutbox.id == message_id).with_for_update()
    ).one_or_none()
    if message is None:
        raise LookupError(f"no message {message_id}")
    if message.status != "failed":
        raise InputRejected(f"Only a failed message can be retried; this one is {message.status}.")
    before = {"status": message.status, "attempts": message.attempts, "last_error": message.last_error}
    message.status = "pending"
    message.attempts = 0
    message.next_attempt_at = func.now()
    audit.record(
        "outbox.retry",
        target=f"email:{message.id}",
        before=before,
        after={"status": "pending", "attempts": 0, "to": message.to_address},
    )
    return message
