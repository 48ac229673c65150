"""Billing for visitors: starting a checkout, the portal link for existing customers, and what the
success page shows."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from nectar.marketing.billing.backends import CHECKOUT_OFF, BillingBackend, BillingUnavailable
from nectar.marketing.billing.plans import Plan, current_plans, find_plan
from nectar.marketing.billing.stripe_api import CheckoutRequest
from nectar.marketing.leads.service import UPSERT_LEAD
from nectar.marketing.limits import FormLimits
from nectar.marketing.links import Links
from nectar.shared import throttle
from nectar.shared.mail import Email, queue_email
from nectar.shared.tokens import make_token, read_token

CHECKOUT_LIMITS = FormLimits(
    "checkout",
    per_email=throttle.Limit(events=10, window_seconds=3600),
    per_address=throttle.Limit(events=30, window_seconds=3600),
)
PORTAL_LIMITS = FormLimits(
    "portal",
    per_email=throttle.Limit(events=3, window_seconds=3600),
    per_address=throttle.Limit(events=20, window_seconds=3600),
)
PORTAL_TOKEN_PURPOSE = "billing.portal"  # noqa: S105 - a token salt
PORTAL_LINK_SECONDS = 3600
# A customer with several subscriptions: the live one first, then the newest.
_CUSTOMER_BY_EMAIL = text(
    "SELECT stripe_customer_id FROM subscriptions WHERE lower(customer_email) = lower(:email) "
    "AND stripe_customer_id <> '' "
    "ORDER BY CASE WHEN status IN ('active', 'trialing', 'past_due') THEN 0 ELSE 1 END, created_at DESC LIMIT 1"
)


class NotForSale(Exception):
    """The form named a plan that cannot be bought (unknown, or free)."""


@dataclass(frozen=True)
class CheckoutStart:
    plan: str
    email: str
    organization_name: str
    nonce: str
    address: str | None


@dataclass(frozen=True)
class CheckoutStatus:
    # waiting (for Stripe's event or for core), awaiting_payment (a delayed payment method), ready,
    # refused. Core's own words stay in provisioning_error, for staff: the buyer gets a plain message.
    state: str
    plan: str | None = None
    organization_name: str | None = None
    masked_email: str | None = None


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def idempotency_key(start: CheckoutStart) -> str:
    """The same form (one page view's nonce) with the same details is the same checkout."""
    nonce = start.nonce.strip() or new_nonce()  # a form without one still works, unprotected
    material = "\n".join((nonce, start.email.strip().lower(), start.plan, start.organization_name.strip()))
    return "checkout-" + hashlib.sha256(material.encode()).hexdigest()


def checkout_plan(plans: list[Plan], key: str) -> Plan:
    plan = find_plan(plans, key)
    if plan is None or not plan.paid:
        raise NotForSale("Choose one of the paid plans on this page.")
    if not plan.price_id:
        raise BillingUnavailable(
            f"The {plan.name} plan cannot be bought online yet. Contact us and we will set it up."
        )
    return plan


def start_checkout(session: Session, backend: BillingBackend, start: CheckoutStart, links: Links) -> str:
    """Records the lead, then opens a checkout with the backend (Stripe's, or the test one); returns
    the address to send the visitor to. Commits the lead and the rate-limit count before calling Stripe.
    Raises NotForSale, BillingUnavailable, StripeUnavailable or RateLimited (committed too: it counts)."""
    if not backend.sells_online:
        raise BillingUnavailable(CHECKOUT_OFF)
    plan = checkout_plan(current_plans(session, backend), start.plan)
    email, organization_name = start.email.strip(), start.organization_name.strip()
    CHECKOUT_LIMITS.check(session, email, start.address)
    lead_id = session.execute(
        UPSERT_LEAD, {"email": email, "name": None, "company": organization_name, "source": "pricing"}
    ).scalar_one()
    session.commit()
    request = CheckoutRequest(
        price_id=plan.price_id,
        email=email,
        plan=plan.key,
        organization_name=organization_name,
        lead_id=str(lead_id),
        success_url=links.checkout_success_url(),
        cancel_url=links.checkout_cancel_url(plan.key),
        idempotency_key=idempotency_key(start),
    )
    return backend.checkout(request, plan, links)


def request_portal_link(
    session: Session, secret_key: str, email: str, address: str | None, link_for: Callable[[str], str]
) -> bool:
    """Emails a link to the billing portal to `email` if it is a customer's address on file (the
    visitor is told the same either way). Returns whether a link was sent. Raises RateLimited."""
    email = email.strip()
    PORTAL_LIMITS.check(session, email, address)
    customer = session.execute(_CUSTOMER_BY_EMAIL, {"email": email}).scalar()
    if customer is None:
        return False
    token = make_token(secret_key, PORTAL_TOKEN_PURPOSE, {"customer": customer})
    queue_email(
        session,
        Email(
            to=email,
            subject="Your Nectar Studio billing link",
            body_text=(
                "Hello,\n\n"
                "Someone (we hope you) asked to manage the Nectar Studio subscription for this address. "
                "This link opens the billing portal, where you can change your plan, update your card, "
                "download invoices or cancel. It works for one hour:\n\n"
                f"{link_for(token)}\n\n"
                "If you did not ask for it, ignore this email; nothing changes.\n\n"
                "Nectar Studio\n"
            ),
            category="billing.portal_link",
        ),
    )
    return True


def open_portal(backend: BillingBackend, secret_key: str, token: str, return_url: str) -> str:
    """The portal session's address for the customer the emailed link names. Raises TokenInvalid,
    BillingUnavailable or StripeUnavailable."""
    customer = read_token(secret_key, PORTAL_TOKEN_PURPOSE, token, PORTAL_LINK_SECONDS)["customer"]
    return backend.portal(customer, return_url)


def checkout_status(session: Session, checkout_session_id: str) -> CheckoutStatus:
    """How far a completed checkout got (see CheckoutStatus.state)."""
    row = session.execute(
        text(
            "SELECT plan, organization_name, customer_email, provisioning_status "
            "FROM subscriptions WHERE checkout_session_id = :id"
        ),
        {"id": checkout_session_id},
    ).first()
    if row is None:
        return CheckoutStatus("waiting")
    # 'none' on a row a checkout made: completed, but its payment has not cleared yet.
    states = {"provisioned": "ready", "refused": "refused", "none": "awaiting_payment"}
    state = states.get(row.provisioning_status, "waiting")
    return CheckoutStatus(
        state,
        plan=row.plan,
        organization_name=row.organization_name,
        masked_email=mask_email(row.customer_email),
    )


def mask_email(email: str | None) -> str | None:
    """j•••@example.com: enough for the buyer to recognise, little for anyone else."""
    if not email or "@" not in email:
        return None
    local, domain = email.rsplit("@", 1)
    return f"{local[:1]}•••@{domain}"
