"""Mail Nectar Studio sends for an organization (its workflows' email, its invitations): counted
against the plan's quota, never sent to an address that unsubscribed from that organization, and
always marked as the organization's, never as if Nectar Studio wrote it.

Quota: each message counts once in the organization's hour and once in its UTC day (throttle.hit,
which increases and returns in one statement; the limit is checked after the increase, so however
many send at once, no more than the limit get through). A refused message rolls its transaction
back, so it is not counted.
"""

from __future__ import annotations

import time
import uuid

from flask import current_app
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from nectar.core.contract.plans import raised_limit
from nectar.core.plans import limits_of
from nectar.schema.models import EmailSuppression, Organization
from nectar.shared import signin, throttle
from nectar.shared.database import tenant_scope
from nectar.shared.mail import SENDER_NAME_HEADER, Email, one_line, quoted, unsubscribe_headers
from nectar.shared.tokens import make_token, read_token

UNSUBSCRIBE_PURPOSE = "org-mail-unsubscribe"
UNSUBSCRIBE_PATH = "/mail/unsubscribe/"
UNSUBSCRIBE_MAX_AGE = 10 * 365 * 24 * 3600  # links sit in mailboxes for years and must keep working
WORKFLOW_CATEGORY = "workflow"
NAME_IN_SUBJECT = 60  # characters of an organization's name shown in a subject or sender name
MAX_SUBJECT = 150  # characters of a workflow's subject (its name and ours come on top)
MAX_BODY = 50_000  # characters of a workflow's email body


class MailLimitReached(Exception):
    """The organization may not send this message now. `str()` says why, for people;
    `retry_after` is seconds until it may (a 429's Retry-After), `limit` the limit it reached."""

    def __init__(self, message: str, retry_after: int, limit: int | None = None):
        super().__init__(message)
        self.retry_after, self.limit = retry_after, limit
        self.resets_at = time.time() + retry_after


def charge(session: Session, org_id: uuid.UUID, plan: str, now: float | None = None) -> None:
    """Counts one message against the organization's plan in the session's transaction, or raises
    MailLimitReached; the caller then rolls back, which uncounts it."""
    now = time.time() if now is None else now
    limits = limits_of(plan)
    org = session.get(Organization, org_id)  # usually loaded already; staff may have raised the limits
    overrides = org.plan_overrides if org is not None else None
    for limit, per in (
        (throttle.Limit(raised_limit(limits.emails_per_hour, overrides, "emails_per_hour"), 3600), "an hour"),
        (throttle.Limit(raised_limit(limits.emails_per_day, overrides, "emails_per_day"), 86_400), "a day"),
    ):
        if throttle.hit(session, f"core.mail:{org_id}:{limit.window_seconds}", limit, now) > limit.events:
            raise MailLimitReached(
                f"this organization's plan allows {limit.events} emails {per}",
                limit.seconds_left(now),
                limit.events,
            )


def single_address(raw: str) -> str:
    """`raw` as one normalised email address, or ValueError saying why not (a list of addresses or
    a display name would let one step mail many people)."""
    try:
        return signin.normalize_email(raw)
    except signin.InvalidEmail as error:
        raise ValueError(f"{one_line(raw, 100)!r} is not one email address: {error}") from None


def is_suppressed(session: Session, address: str) -> bool:
    """Whether `address` unsubscribed from the mail of the session's organization."""
    return (
        session.scalar(select(EmailSuppression.org_id).where(EmailSuppression.address == address)) is not None
    )


def suppress(session: Session, org_id: uuid.UUID, address: str) -> None:
    """`address` gets no more mail from the organization (the session is scoped to it)."""
    session.execute(
        text(
            "INSERT INTO email_suppressions (org_id, address) VALUES (:org, :address) "
            "ON CONFLICT (org_id, address) DO NOTHING"
        ),
        {"org": org_id, "address": address},
    )


def unsubscribe_url(org_id: uuid.UUID, address: str) -> str:
    """The link (page and RFC 8058 one-click POST) that stops the organization's mail to `address`."""
    token = make_token(current_app.secret_key, UNSUBSCRIBE_PURPOSE, {"o": str(org_id), "e": address.lower()})
    return f"{current_app.config['NECTAR_SETTINGS'].public_url}{UNSUBSCRIBE_PATH}{token}"


def read_unsubscribe(secret_key: str, token: str) -> tuple[uuid.UUID, str]:
    """The organization and address an unsubscribe link names; TokenInvalid if it names none."""
    data = read_token(secret_key, UNSUBSCRIBE_PURPOSE, token, UNSUBSCRIBE_MAX_AGE)
    return uuid.UUID(data["o"]), data["e"]


def sender_name(org_name: str) -> str:
    return f"{one_line(org_name, NAME_IN_SUBJECT)} via Nectar Studio"


def organization_headers(org_name: str, unsubscribe: str) -> dict[str, str]:
    """What every message sent for an organization carries: its name in the sender's, and a
    one-click unsubscribe (`unsubscribe_url`) from it."""
    return {SENDER_NAME_HEADER: sender_name(org_name), **unsubscribe_headers(unsubscribe)}


def workflow_email(org_id: uuid.UUID, org_name: str, to: str, subject: str, body: str) -> Email:
    """A workflow's message as the recipient gets it: marked as the organization's before and after
    its text, with the organization's name (never first) in the subject."""
    org = quoted(org_name, NAME_IN_SUBJECT)
    unsubscribe = unsubscribe_url(org_id, to)
    return Email(
        to=to,
        subject=f"[Nectar Studio · {org}] {one_line(subject, MAX_SUBJECT)}",
        body_text=(
            f"This message comes from the organization {org}, sent by one of its workflows on Nectar "
            "Studio. Nectar Studio did not write it.\n\n"
            f"{body}\n\n"
            "--\n"
            f"Sent for {org} through Nectar Studio. To get no more email from {org}, open:\n"
            f"{unsubscribe}\n"
        ),
        category=WORKFLOW_CATEGORY,
        headers=organization_headers(org_name, unsubscribe),
    )


class WorkflowMail:
    """The send_email steps of one run in one organization. Each message is checked (one address,
    not unsubscribed) and counted in a short transaction of its own, committed at once: a long run
    never holds the quota's row lock, and a message whose run is then lost stays counted (less mail,
    never more). The step fails on the spot when the quota is reached, so the run records honestly
    what happened and the steps after it do not run as if the mail had gone."""

    def __init__(self, engine: Engine, org_id: uuid.UUID):
        self.engine, self.org_id = engine, org_id
        self._org = None  # its name and plan, read with the first message

    def message(self, to: str, subject: str, body: str) -> Email | None:
        """The message to queue, or None when the recipient unsubscribed from this organization.
        Raises ValueError for a bad address or body, MailLimitReached at the quota."""
        address = single_address(to)
        if len(body) > MAX_BODY:
            raise ValueError(f"the body is {len(body)} characters; an email's is at most {MAX_BODY}")
        with Session(self.engine) as session, tenant_scope(session, self.org_id):
            if self._org is None:
                self._org = session.execute(
                    select(Organization.name, Organization.plan).where(Organization.id == self.org_id)
                ).one()
            if is_suppressed(session, address):
                return None
            charge(session, self.org_id, self._org.plan)  # raising leaves the block: rolled back
            session.commit()
        return workflow_email(self.org_id, self._org.name, address, subject, body)
