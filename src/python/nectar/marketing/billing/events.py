"""Processing stored Stripe events into the subscriptions mirror (run by the worker).

Each event is processed once: its row is locked and skipped when `processed_at` is set. Order is not
trusted. With a Stripe key, the subscription is re-read from Stripe, so the mirror takes Stripe's
current state whatever the order; a transaction-scoped advisory lock per subscription, taken before
the re-read and held until the write commits, keeps two workers from writing what they read in the
wrong order. Without a key (the test checkout), the event's own object is applied
only when the event is newer than the last one applied (`stripe_event_watermark`, Stripe's `created`
seconds); within one second a `created` event never overwrites, and a canceled subscription never
comes back (Stripe's cancellation is final).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from nectar.core.contract import PLANS
from nectar.marketing.billing.plans import FREE, Plan, find_plan, plan_for_price
from nectar.marketing.billing.queue import enqueue_plan_sync, enqueue_provision
from nectar.marketing.leads.service import UPSERT_LEAD
from nectar.schema.models import StripeEvent, Subscription

log = logging.getLogger(__name__)

# How an event ranks against another applied in the same second (Stripe's `created` has seconds only).
SUBSCRIPTION_EVENTS = {
    "customer.subscription.created": 0,
    "customer.subscription.updated": 1,
    "customer.subscription.deleted": 2,
}
INVOICE_EVENTS = {"invoice.paid": "last_paid_at", "invoice.payment_failed": "last_payment_failed_at"}
CHECKOUT_COMPLETED = "checkout.session.completed"
# A delayed payment method (a bank debit, say) that cleared after the checkout completed unpaid.
CHECKOUT_PAID_LATER = "checkout.session.async_payment_succeeded"
# A checkout is paid for (or costs nothing now, a trial say): only then is an organization made.
PAID = ("paid", "no_payment_required")
# Statuses in which the customer no longer pays: their organization goes back to the free plan.
LAPSED = ("canceled", "unpaid", "incomplete_expired")
UNKNOWN_PLAN = "unknown"
ERROR_LIMIT = 2000

# Re-reads a subscription from Stripe; None when there is no Stripe key (or Stripe has no such object).
Reread = Callable[[str], dict | None]

_APPLY_STATE = text("""
    INSERT INTO subscriptions AS s (
        stripe_subscription_id, stripe_customer_id, status, plan, stripe_price_id, quantity, unit_amount,
        currency, interval, interval_count, current_period_end, cancel_at_period_end, canceled_at,
        stripe_event_watermark, lead_id
    ) VALUES (
        :subscription, :customer, :status, :plan, :price_id, :quantity, :unit_amount, :currency, :interval,
        :interval_count, :current_period_end, :cancel_at_period_end, :canceled_at, :watermark, :lead_id
    )
    ON CONFLICT (stripe_subscription_id) DO UPDATE SET
        stripe_customer_id = excluded.stripe_customer_id,
        status = excluded.status,
        plan = CASE WHEN excluded.plan = 'unknown' THEN s.plan ELSE excluded.plan END,
        stripe_price_id = excluded.stripe_price_id,
        quantity = excluded.quantity,
        unit_amount = excluded.unit_amount,
        currency = excluded.currency,
        interval = excluded.interval,
        interval_count = excluded.interval_count,
        current_period_end = excluded.current_period_end,
        cancel_at_period_end = excluded.cancel_at_period_end,
        canceled_at = excluded.canceled_at,
        stripe_event_watermark = GREATEST(s.stripe_event_watermark, excluded.stripe_event_watermark),
        lead_id = COALESCE(s.lead_id, excluded.lead_id),
        updated_at = now()
    WHERE CAST(:authoritative AS boolean)
       OR ((excluded.stripe_event_watermark > s.stripe_event_watermark
            OR (excluded.stripe_event_watermark = s.stripe_event_watermark AND :rank > 0))
           AND (s.status <> 'canceled' OR excluded.status = 'canceled'))
    RETURNING s.id
    """)

_LINK_CHECKOUT = text("""
    INSERT INTO subscriptions AS s (
        stripe_subscription_id, stripe_customer_id, status, plan, checkout_session_id, customer_email,
        organization_name, lead_id, provisioning_status
    ) VALUES (
        :subscription, :customer, 'incomplete', :plan, :checkout_session_id, :email, :organization_name,
        :lead_id, :provisioning
    )
    ON CONFLICT (stripe_subscription_id) DO UPDATE SET
        checkout_session_id = COALESCE(s.checkout_session_id, excluded.checkout_session_id),
        customer_email = COALESCE(excluded.customer_email, s.customer_email),
        organization_name = COALESCE(s.organization_name, excluded.organization_name),
        lead_id = COALESCE(s.lead_id, excluded.lead_id),
        plan = CASE WHEN s.plan = 'unknown' THEN excluded.plan ELSE s.plan END,
        provisioning_status = CASE WHEN s.provisioning_status = 'none' THEN excluded.provisioning_status
                                   ELSE s.provisioning_status END,
        updated_at = now()
    RETURNING s.id, s.provisioning_status
    """)

_LOCK_SUBSCRIPTION = text("SELECT pg_advisory_xact_lock(hashtextextended('stripe-subscription:' || :id, 0))")

_PLACEHOLDER = text(
    "INSERT INTO subscriptions (stripe_subscription_id, stripe_customer_id, status, plan) "
    "VALUES (:subscription, :customer, 'incomplete', :plan) ON CONFLICT (stripe_subscription_id) DO NOTHING"
)


@dataclass(frozen=True)
class EventContext:
    plans: list[Plan]
    reread: Reread


def process_event(session: Session, event_id: str, context: EventContext) -> str:
    """Applies one stored event, once. Returns what happened, for the log. The caller commits; on an
    exception it rolls back and records the failure with `record_failure`."""
    row = session.scalars(select(StripeEvent).where(StripeEvent.id == event_id).with_for_update()).first()
    if row is None:
        return "unknown event"
    if row.processed_at is not None:
        return "already processed"
    outcome = apply_event(session, row.payload, context)
    row.processed_at = datetime.now(UTC)
    row.attempts += 1
    row.last_error = None
    return outcome


def record_failure(session: Session, event_id: str, error: BaseException) -> None:
    """Counts a failed attempt and keeps its reason, in a transaction of its own."""
    session.execute(
        text("UPDATE stripe_events SET attempts = attempts + 1, last_error = :error WHERE id = :id"),
        {"id": event_id, "error": f"{type(error).__name__}: {error}"[:ERROR_LIMIT]},
    )


def apply_event(session: Session, event: dict, context: EventContext) -> str:
    kind, obj, created = event["type"], event["data"]["object"], int(event["created"])
    if kind in (CHECKOUT_COMPLETED, CHECKOUT_PAID_LATER):
        return _checkout_completed(session, obj, created, context)
    if kind in SUBSCRIPTION_EVENTS:
        return _subscription_changed(session, obj, created, SUBSCRIPTION_EVENTS[kind], context)
    if kind in INVOICE_EVENTS:
        return _invoice(session, obj, created, INVOICE_EVENTS[kind], context)
    return f"ignored {kind}"


def desired_core_plan(status: str, plan: str) -> str | None:
    """The plan core should have for a subscription in this state; None when the plan is not core's."""
    if status in LAPSED:
        return FREE
    return plan if plan in PLANS else None


def lock_subscription(session: Session, subscription_id: str) -> None:
    """Waits for, then holds until the transaction ends, the right to re-read and write this
    subscription: a worker that read an older state from Stripe writes it before another reads."""
    session.execute(_LOCK_SUBSCRIPTION, {"id": subscription_id})


def _checkout_completed(session: Session, checkout: dict, created: int, context: EventContext) -> str:
    """Links a checkout to its subscription, and queues provisioning once it is paid for (a delayed
    payment method completes the checkout unpaid, then sends async_payment_succeeded)."""
    subscription_id = _id(checkout.get("subscription"))
    if checkout.get("mode") != "subscription" or not subscription_id:
        return "ignored: not a subscription checkout"
    lock_subscription(session, subscription_id)
    paid = checkout.get("payment_status") in PAID
    metadata = checkout.get("metadata") or {}
    email = (checkout.get("customer_details") or {}).get("email") or checkout.get("customer_email")
    plan = _metadata_plan(context.plans, metadata) or UNKNOWN_PLAN
    organization_name = (metadata.get("organization_name") or "").strip()[:200] or _default_org_name(email)
    lead_id = _known_lead(session, checkout.get("client_reference_id") or metadata.get("lead_id"))
    if lead_id is None and email:
        # A checkout not started from our pricing page (a payment link, say) still becomes a lead.
        lead_id = session.execute(
            UPSERT_LEAD, {"email": email, "name": None, "company": None, "source": "checkout"}
        ).scalar_one()
    if lead_id is not None and paid:
        session.execute(
            text("UPDATE leads SET status = 'won', updated_at = now() WHERE id = :id"), {"id": lead_id}
        )
    row_id, provisioning = session.execute(
        _LINK_CHECKOUT,
        {
            "subscription": subscription_id,
            "customer": _id(checkout.get("customer")) or "",
            "plan": plan,
            "checkout_session_id": checkout.get("id"),
            "email": email,
            "organization_name": organization_name,
            "lead_id": lead_id,
            "provisioning": "pending" if paid else "none",
        },
    ).one()
    fresh = context.reread(subscription_id)
    if fresh is not None:
        _apply_state(session, fresh, created, rank=0, context=context, authoritative=True)
    if provisioning == "pending":
        enqueue_provision(session, row_id)
    if not paid:
        return f"checkout {checkout.get('id')} linked to {subscription_id}; waiting for its payment"
    return f"checkout {checkout.get('id')} linked to {subscription_id}"


def _subscription_changed(session: Session, subscription: dict, created: int, rank: int, context) -> str:
    lock_subscription(session, subscription["id"])
    fresh = context.reread(subscription["id"])
    applied = _apply_state(
        session, fresh or subscription, created, rank=rank, context=context, authoritative=fresh is not None
    )
    return f"subscription {subscription['id']} " + ("updated" if applied else "unchanged: the event is older")


def _invoice(session: Session, invoice: dict, created: int, column: str, context: EventContext) -> str:
    subscription_id = _invoice_subscription(invoice)
    if not subscription_id:
        return "ignored: not a subscription invoice"
    lock_subscription(session, subscription_id)
    fresh = context.reread(subscription_id)
    if fresh is not None:
        _apply_state(session, fresh, created, rank=0, context=context, authoritative=True)
    else:
        # The subscription's own events carry its state; make sure the row exists to mark.
        session.execute(
            _PLACEHOLDER,
            {
                "subscription": subscription_id,
                "customer": _id(invoice.get("customer")) or "",
                "plan": _invoice_plan(invoice, context.plans),
            },
        )
    # GREATEST keeps the newest time whatever the order: failing means the failure is the newer one.
    session.execute(
        text(
            f"UPDATE subscriptions SET {column} = GREATEST({column}, :at), "  # noqa: S608 - a fixed column
            "customer_email = COALESCE(customer_email, :email), updated_at = now() "
            "WHERE stripe_subscription_id = :subscription"
        ),
        {"at": _time(created), "email": invoice.get("customer_email"), "subscription": subscription_id},
    )
    return f"invoice {invoice.get('id')} on {subscription_id}: {column}"


def _apply_state(
    session: Session,
    subscription: dict,
    created: int,
    *,
    rank: int,
    context: EventContext,
    authoritative: bool,
) -> bool:
    items = (subscription.get("items") or {}).get("data") or [{}]
    item = items[0]
    price = item.get("price") or subscription.get("plan") or {}
    recurring = price.get("recurring") or {}
    metadata = subscription.get("metadata") or {}
    plan = plan_for_price(context.plans, price.get("id"))
    plan_key = plan.key if plan else _metadata_plan(context.plans, metadata)
    applied = session.execute(
        _APPLY_STATE,
        {
            "subscription": subscription["id"],
            "customer": _id(subscription.get("customer")) or "",
            "status": str(subscription.get("status") or "incomplete")[:40],
            "plan": plan_key or UNKNOWN_PLAN,
            "price_id": price.get("id"),
            "quantity": int(item.get("quantity") or subscription.get("quantity") or 1),
            "unit_amount": int(price.get("unit_amount") or 0),
            "currency": str(price.get("currency") or subscription.get("currency") or "usd")[:3],
            "interval": str(recurring.get("interval") or price.get("interval") or "month")[:10],
            "interval_count": max(1, int(recurring.get("interval_count") or 1)),
            # Since API version 2025-03-31 the period lives on the item; older versions had it on the top.
            "current_period_end": _time(
                item.get("current_period_end") or subscription.get("current_period_end")
            ),
            "cancel_at_period_end": bool(subscription.get("cancel_at_period_end")),
            "canceled_at": _time(subscription.get("canceled_at")),
            "watermark": created,
            "lead_id": _known_lead(session, metadata.get("lead_id")),
            "rank": rank,
            "authoritative": authoritative,
        },
    ).scalar()
    if applied is not None:
        _follow_plan(session, applied)
    return applied is not None


def _follow_plan(session: Session, subscription_id: uuid.UUID) -> None:
    """Queues a plan change in core when the organization's plan no longer matches the subscription."""
    row = session.get(Subscription, subscription_id, populate_existing=True)
    if row.organization_id is None:
        return  # provisioning will use the current plan
    desired = desired_core_plan(row.status, row.plan)
    if desired is not None and desired != row.core_plan:
        enqueue_plan_sync(session, row.id)


def _invoice_subscription(invoice: dict) -> str | None:
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    # Since API version 2025-03-31 it is under parent.subscription_details; before, on the invoice.
    return _id(details.get("subscription")) or _id(invoice.get("subscription"))


def _invoice_plan(invoice: dict, plans: list[Plan]) -> str:
    for line in (invoice.get("lines") or {}).get("data") or []:
        pricing = line.get("pricing") or {}
        price_id = (pricing.get("price_details") or {}).get("price") or _id(line.get("price"))
        plan = plan_for_price(plans, price_id)
        if plan:
            return plan.key
    metadata = ((invoice.get("parent") or {}).get("subscription_details") or {}).get("metadata") or {}
    return _metadata_plan(plans, metadata) or UNKNOWN_PLAN


def _metadata_plan(plans: list[Plan], metadata: dict) -> str | None:
    """The plan our checkout wrote into the metadata, when it is one on sale."""
    plan = find_plan(plans, metadata.get("plan"))
    return plan.key if plan else None


def _known_lead(session: Session, value) -> uuid.UUID | None:
    """The lead a checkout names, if it exists (the reference comes back from Stripe as text)."""
    try:
        lead_id = uuid.UUID(str(value))
    except ValueError:
        return None
    return session.scalar(text("SELECT id FROM leads WHERE id = :id"), {"id": lead_id})


def _default_org_name(email: str | None) -> str:
    local = (email or "").split("@")[0].strip()
    return f"{local}'s organization"[:200] if len(local) >= 1 else "My organization"


def _id(value) -> str | None:
    """A Stripe reference is an id, or the object itself when expanded."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _time(seconds) -> datetime | None:
    return datetime.fromtimestamp(int(seconds), UTC) if seconds else None
