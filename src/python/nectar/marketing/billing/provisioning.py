"""Giving a paying customer their organization in core, through core's contract, and keeping its
plan in line with the subscription.

`create_account` is idempotent by request_id (the Checkout Session's id), so a retry after a lost
answer finds the organization the first call made. Only a 422 from core (the input itself is
invalid: retrying cannot help) is final, recorded on the subscription for staff. Anything else
(core down, 5xx, or a refusal such as 401/403 from a wrong CORE_SERVICE_TOKEN, 404, 409, 429) is
recorded and retried with capped backoff until it succeeds: a paying customer is never left
without an organization because of our configuration or core's state.

No transaction is open while core is called: what the call needs is copied out of the row first.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from nectar.core.contract import CoreClient, CoreRefused
from nectar.marketing.billing.events import ERROR_LIMIT, desired_core_plan
from nectar.marketing.billing.plans import CATALOGUE, find_plan
from nectar.marketing.billing.queue import enqueue_plan_sync
from nectar.schema.models import Subscription
from nectar.shared.mail import Email, queue_email_once

log = logging.getLogger(__name__)

# Core's answer that what we sent is invalid: the one refusal that is final.
INVALID_INPUT = 422
# How a final refusal of a plan change starts in provisioning_error (the sweep leaves those alone).
PLAN_REFUSED = "core refused the plan change"


@dataclass(frozen=True)
class WelcomeLinks:
    sign_in: str  # core's sign-in page
    billing: str  # marketing's page that emails a billing-portal link


class RetryLater(Exception):
    """Core said no for now (a refusal other than 422): the job is retried with backoff."""


@dataclass(frozen=True)
class _Order:
    """What provisioning needs from the subscription, read before core is called."""

    id: uuid.UUID
    email: str
    organization_name: str
    request_id: str
    plan: str


def provision(session: Session, subscription_id: uuid.UUID, core: CoreClient, links: WelcomeLinks) -> str:
    """Creates the organization for a completed checkout (once) and queues the welcome email.
    Commits what it records; raises CoreUnavailable or RetryLater for the worker to retry."""
    row = session.get(Subscription, subscription_id, populate_existing=True)
    if row is None or row.provisioning_status != "pending":
        return "nothing to provision"
    order = _Order(
        id=row.id,
        email=row.customer_email or "",
        organization_name=row.organization_name or "My organization",
        request_id=row.checkout_session_id or row.stripe_subscription_id,
        plan=desired_core_plan(row.status, row.plan) or "free",
    )
    session.commit()  # ends the read: no transaction stays open while core is called
    try:
        account = core.create_account(
            email=order.email,
            organization_name=order.organization_name,
            request_id=order.request_id,
            plan=order.plan,
        )
    except CoreRefused as refused:
        if refused.status == INVALID_INPUT:
            _record(session, order.id, "refused", f"core refused ({refused.status}): {refused.detail}")
            session.commit()
            log.warning("billing: core refused to provision subscription %s: %s", order.id, refused.detail)
            return "refused"
        _record(session, order.id, "pending", f"core answered {refused.status} ({refused.detail}); retrying")
        session.commit()
        log.warning("billing: core answered %s for subscription %s; retrying", refused.status, order.id)
        raise RetryLater(str(refused)) from None
    except Exception as error:
        _record(session, order.id, "pending", str(error))
        session.commit()
        raise
    done = session.execute(
        text(
            "UPDATE subscriptions SET organization_id = :org, provisioning_status = 'provisioned', "
            "provisioned_at = now(), provisioning_error = NULL, provisioning_attempts = provisioning_attempts + 1, "
            "core_plan = :plan, updated_at = now() WHERE id = :id AND provisioning_status = 'pending' "
            "RETURNING status, plan"
        ),
        {"org": account.organization_id, "plan": order.plan, "id": order.id},
    ).first()
    if done is not None and queue_email_once(session, _welcome(order, links)):
        # The subscription may have changed while core was being called.
        if desired_core_plan(done.status, done.plan) not in (None, order.plan):
            enqueue_plan_sync(session, order.id)
    session.commit()
    return f"provisioned organization {account.organization_id}"


def sync_plan(session: Session, subscription_id: uuid.UUID, core: CoreClient) -> str:
    """Tells core the plan the subscription now pays for (free once it has lapsed). Raises
    CoreUnavailable or RetryLater for the worker to retry."""
    row = session.get(Subscription, subscription_id, populate_existing=True)
    if row is None or row.organization_id is None:
        return "no organization yet"
    desired = desired_core_plan(row.status, row.plan)
    if desired is None or desired == row.core_plan:
        return "plan already in line"
    row_id, organization_id = row.id, row.organization_id
    session.commit()  # ends the read: no transaction stays open while core is called
    try:
        core.set_plan(organization_id, desired)
    except CoreRefused as refused:
        final = refused.status == INVALID_INPUT
        message = (
            f"{PLAN_REFUSED} to {desired} ({refused.status}): {refused.detail}"
            if final
            else f"core answered {refused.status} to the plan change to {desired} ({refused.detail}); retrying"
        )
        session.execute(
            text("UPDATE subscriptions SET provisioning_error = :error, updated_at = now() WHERE id = :id"),
            {"error": message[:ERROR_LIMIT], "id": row_id},
        )
        session.commit()
        log.warning("billing: %s (subscription %s)", message, row_id)
        if not final:
            raise RetryLater(str(refused)) from None
        return "refused"
    session.execute(
        text(
            "UPDATE subscriptions SET core_plan = :plan, provisioning_error = NULL, updated_at = now() WHERE id = :id"
        ),
        {"plan": desired, "id": row_id},
    )
    session.commit()
    return f"plan set to {desired}"


def _record(session: Session, subscription_id: uuid.UUID, status: str, error: str) -> None:
    session.execute(
        text(
            "UPDATE subscriptions SET provisioning_status = :status, provisioning_error = :error, "
            "provisioning_attempts = provisioning_attempts + 1, updated_at = now() "
            "WHERE id = :id AND provisioning_status = 'pending'"
        ),
        {"status": status, "error": error[:ERROR_LIMIT], "id": subscription_id},
    )


def _welcome(order: _Order, links: WelcomeLinks) -> Email:
    plan_name = (find_plan(list(CATALOGUE), order.plan) or CATALOGUE[0]).name
    # Core tells us whether it made the user only on the first call (a retry says no), so the text
    # fits both: core itself sends the set-password email to a new user.
    first_step = (
        "New to Nectar Studio? We have sent you a separate email with a link to set your password; "
        "use it first. Already have an account? Just sign in."
    )
    return Email(
        to=order.email,
        subject="Welcome to Nectar Studio",
        body_text=(
            "Hello,\n\n"
            f"Thank you for subscribing to Nectar Studio {plan_name}. Your organization "
            f'"{order.organization_name}" is ready.\n\n'
            f"{first_step}\n\n"
            f"Sign in: {links.sign_in}\n\n"
            f"To change your plan, update your card, download invoices or cancel: {links.billing}\n\n"
            "Nectar Studio\n"
        ),
        category="welcome",
        dedupe_key=f"billing.welcome:{order.id}",
    )
