"""Leads: contact-form inquiries stored for sales (admin reads them through its own role).

One lead per email address (`leads.email` is unique, case-insensitive); every submission adds an
inquiry to it. The upsert is one `INSERT ... ON CONFLICT`, so concurrent submissions for one new
address still make one lead, and each of them keeps its inquiry.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.orm import Session

from nectar.marketing.limits import CONTACT
from nectar.shared.mail import Email, queue_email

UPSERT_LEAD = text(
    "INSERT INTO leads (email, name, company, source, last_inquiry_at) "
    "VALUES (:email, :name, :company, :source, now()) "
    "ON CONFLICT (email) DO UPDATE SET "
    # The newest details win when given; the first source stays (it is how the lead found us).
    "name = COALESCE(excluded.name, leads.name), "
    "company = COALESCE(excluded.company, leads.company), "
    "source = COALESCE(leads.source, excluded.source), "
    "last_inquiry_at = GREATEST(leads.last_inquiry_at, excluded.last_inquiry_at), "
    "updated_at = now() "
    "RETURNING id"
)
INSERT_INQUIRY = text(
    "INSERT INTO lead_inquiries (lead_id, message, source, utm, address, user_agent) "
    "VALUES (:lead_id, :message, :source, CAST(:utm AS jsonb), CAST(:address AS inet), :user_agent)"
)


@dataclass(frozen=True)
class Inquiry:
    name: str
    email: str
    message: str
    company: str | None = None
    source: str | None = None
    utm: dict[str, str] = field(default_factory=dict)
    address: str | None = None
    user_agent: str | None = None


def _inet(address: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(address)) if address else None
    except ValueError:
        return None


def submit_inquiry(session: Session, inquiry: Inquiry) -> uuid.UUID:
    """Stores the inquiry on its lead (made on first contact) and queues the confirmation email, all
    in the session's transaction; returns the lead's id. Raises RateLimited (commit anyway, so the
    attempt counts)."""
    CONTACT.check(session, inquiry.email, inquiry.address)
    lead_id = session.execute(
        UPSERT_LEAD,
        {
            "email": inquiry.email,
            "name": inquiry.name or None,
            "company": inquiry.company or None,
            "source": inquiry.source or None,
        },
    ).scalar_one()
    session.execute(
        INSERT_INQUIRY,
        {
            "lead_id": lead_id,
            "message": inquiry.message,
            "source": inquiry.source or None,
            "utm": json.dumps(inquiry.utm),
            "address": _inet(inquiry.address),
            "user_agent": (inquiry.user_agent or "")[:500] or None,
        },
    )
    queue_email(session, _confirmation(inquiry))
    return lead_id


def _confirmation(inquiry: Inquiry) -> Email:
    # Nothing the visitor typed goes into it (not the name, not the message): anyone can type any
    # address, and the form must not relay their text (links, say) to it from our domain.
    return Email(
        to=inquiry.email,
        subject="We received your message - Nectar Studio",
        body_text=(
            "Hello,\n\n"
            "Thanks for getting in touch with Nectar Studio. Your message reached our team, and a person "
            "will answer within one business day.\n\n"
            "If you did not write to us, you can ignore this email.\n\n"
            "Nectar Studio\n"
        ),
        category="lead.confirmation",
    )
