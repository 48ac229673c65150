"""Giving a paying customer their organization in core, through core's contract, and keeping its
plan in line with the subscription.

`create_account` is idempotent by request_id (the Checkout Session's id), so a retry after a lost
answer finds the organization the first call made. Core being down raises CoreUnavailable and the
job is retried with backoff; core refusing (a 4xx) is recorded on the subscription for staff and not
retried, except 409, which means a concurrent call for the same request is still running.
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
from nectar.shared.mail import Email, queue_email

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WelcomeLinks:
    sign_in: str  # core's sign-in page
    billing: str  # marketing's page that emails a billing-portal link


class RetryLater(Exception):
    """Core asked us to come back (a concurrent request for the same organization)."""


def provision(session: Session, subscription_id: uuid.UUID, core: CoreClient, links: WelcomeLinks) -> str:
    """Creates the organization for a completed checkout (once) and queues the welcome email.
    Commits what it records; raises CoreUnavailable or RetryLater for the worker to retry."""
    row = session.get(Subscription, subscription_id, populate_existing=True)
    if row is None or row.provisioning_status != "pending":
        return "nothing to provision"
    plan = desired_core_plan(row.status, row.plan) or "free"
    session.commit()  # no transaction stays open while core is called
    try:
        account = core.create_account(
            email=row.customer_email or "",
            organization_name=row.organization_name or "My organization",
            request_id=row.checkout_session_id or row.stripe_subscription_id,
            plan=plan,
        )
    except CoreRefused as refused:
        if refused.status == 409:
            raise RetryLater(refused.detail) from None
        _record(session, row.id, "refused", f"core refused ({refused.status}): {refused.detail}")
        session.commit()
        log.warning("billing: core refused to provision subscription %s: %s", row.id, refused.detail)
        return "refused"
    except Exception as error:
        _record(session, row.id, "pending", str(error))
        session.commit()
        raise
    done = session.execute(
        text(
            "UPDATE subscriptions SET organization_id = :org, provisioning_status = 'provisioned', "
            "provisioned_at = now(), provisioning_error = NULL, provisioning_attempts = provisioning_attempts + 1, "
            "core_plan = :plan, updated_at = now() WHERE id = :id AND provisioning_status = 'pending' RETURNING id"
        ),
        {"org": account.organization_id, "plan": plan, "id": row.id},
    ).scalar()
    welcome = _welcome(row, plan, links)
    if done is not None and not _queued_already(session, welcome.dedupe_key):
        queue_email(session, welcome)
        # The subscription may have changed while core was being called.
        session.refresh(row)
        if desired_core_plan(row.status, row.plan) not in (None, plan):
            enqueue_plan_sync(session, row.id)
    session.commit()
    return f"provisioned organization {account.organization_id}"


def sync_plan(session: Session, subscription_id: uuid.UUID, core: CoreClient) -> str:
    """Tells core the plan the subscription now pays for (free once it has lapsed)."""
    row = session.get(Subscription, subscription_id, populate_existing=True)
    if row is None or row.organization_id is None:
        return "no organization yet"
    desired = desired_core_plan(row.status, row.plan)
    if desired is None or desired == row.core_plan:
        return "plan already in line"
    session.commit()  # no transaction stays open while core is called
    try:
        core.set_plan(row.organization_id, desired)
    except CoreRefused as refused:
        message = f"core refused the plan change to {desired} ({refused.status}): {refused.detail}"
        session.execute(
            text("UPDATE subscriptions SET provisioning_error = :error, updated_at = now() WHERE id = :id"),
            {"error": message[:ERROR_LIMIT], "id": row.id},
        )
        session.commit()
        log.warning("billing: %s (subscription %s)", message, row.id)
        return "refused"
    session.execute(
        text(
            "UPDATE subscriptions SET core_plan = :plan, provisioning_error = NULL, updated_at = now() WHERE id = :id"
        ),
        {"plan": desired, "id": row.id},
    )
    session.commit()
    return f"plan set to {desired}"


def _queued_already(session: Session, dedupe_key: str) -> bool:
    found = session.execute(text("SELECT 1 FROM email_outbox WHERE dedupe_key = :key"), {"key": dedupe_key})
    return found.first() is not None


def _record(session: Session, subscription_id: uuid.UUID, status: str, error: str) -> None:
    session.execute(
        text(
            "UPDATE subscriptions SET provisioning_status = :status, provisioning_error = :error, "
            "provisioning_attempts = provisioning_attempts + 1, updated_at = now() "
            "WHERE id = :id AND provisioning_status = 'pending'"
        ),
        {"status": status, "error": error[:ERROR_LIMIT], "id": subscription_id},
    )


def _welcome(row: Subscription, plan: str, links: WelcomeLinks) -> Email:
    plan_name = (find_plan(list(CATALOGUE), plan) or CATALOGUE[0]).name
    # Core tells us whether it made the user only on the first call (a retry says no), so the text
    # fits both: core itself sends the set-password email to a new user.
    first_step = (
        "New to Nectar Studio? We have sent you a separate email with a link to set your password; "
        "use it first. Already have an account? Just sign in."
    )
    return Email(
        to=row.customer_email or "",
        subject="Welcome to Nectar Studio",
        body_text=(
            "Hello,\n\n"
            f"Thank you for subscribing to Nectar Studio {plan_name}. Your organization "
            f'"{row.organization_name}" is ready.\n\n'
            f"{first_step}\n\n"
            f"Sign in: {links.sign_in}\n\n"
            f"To change your plan, update your card, download invoices or cancel: {links.billing}\n\n"
            "Nectar Studio\n"
        ),
        category="welcome",
        dedupe_key=f"billing.welcome:{row.id}",
    )
