"""The test checkout: without Stripe keys, a local page stands in for Stripe's hosted checkout.

Completing it makes the events Stripe would send for a new subscription (shaped like Stripe's API
version below), signs them with the webhook secret and POSTs them to this service's public
/stripe/webhook, so they are verified, stored and processed by exactly the code that handles
Stripe's. Every id derives from the session's, which derives from the checkout's idempotency key:
a double click, a retried delivery or a second completion produce the same events, stored once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import asdict, dataclass

import requests

from nectar.marketing.billing.stripe_api import checkout_metadata
from nectar.marketing.billing.webhooks import SIGNATURE_HEADER, signature_header
from nectar.shared.tokens import make_token, read_token

API_VERSION = "2025-10-29.clover"
TOKEN_PURPOSE = "billing.sandbox_checkout"  # noqa: S105 - a token salt
SESSION_LIFETIME_SECONDS = 24 * 3600  # as long as a Stripe Checkout Session stays open
MONTH_SECONDS = 30 * 24 * 3600


class DeliveryFailed(Exception):
    """The webhook endpoint did not accept an event (the worker retries)."""


@dataclass(frozen=True)
class SandboxCheckout:
    session_id: str
    email: str
    plan: str
    plan_name: str
    organization_name: str
    lead_id: str
    price_id: str
    amount_cents: int
    currency: str
    interval: str
    success_url: str
    cancel_url: str

    def object_id(self, prefix: str, name: str | None = None) -> str:
        """A Stripe-looking id for one of this checkout's objects (or events), the same every time."""
        digest = hashlib.sha256(f"{self.session_id}:{name or prefix}".encode()).hexdigest()[:24]
        return f"{prefix}_test_{digest}"


def session_id_for(secret: str, idempotency_key: str) -> str:
    return "cs_test_" + hmac.new(secret.encode(), idempotency_key.encode(), hashlib.sha256).hexdigest()[:40]


def session_token(secret: str, checkout: SandboxCheckout) -> str:
    """The page address carries the session, signed, so nothing is stored until it is completed."""
    return make_token(secret, TOKEN_PURPOSE, asdict(checkout))


def read_session(secret: str, token: str) -> SandboxCheckout:
    """Raises nectar.shared.tokens.TokenInvalid for a forged or expired session."""
    return SandboxCheckout(**read_token(secret, TOKEN_PURPOSE, token, SESSION_LIFETIME_SECONDS))


def checkout_events(checkout: SandboxCheckout, now: int | None = None) -> list[dict]:
    """The events of a completed subscription checkout, in the order Stripe usually sends them."""
    now = int(time.time()) if now is None else now
    customer = checkout.object_id("cus")
    subscription_id = checkout.object_id("sub")
    invoice_id = checkout.object_id("in")
    metadata = checkout_metadata(
        lead_id=checkout.lead_id, plan=checkout.plan, organization_name=checkout.organization_name
    )
    price = {
        "id": checkout.price_id,
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "currency": checkout.currency,
        "livemode": False,
        "nickname": checkout.plan_name,
        "product": checkout.object_id("prod"),
        "recurring": {"interval": checkout.interval, "interval_count": 1, "usage_type": "licensed"},
        "type": "recurring",
        "unit_amount": checkout.amount_cents,
    }
    subscription = {
        "id": subscription_id,
        "object": "subscription",
        "billing_cycle_anchor": now,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "collection_method": "charge_automatically",
        "created": now,
        "currency": checkout.currency,
        "customer": customer,
        "ended_at": None,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": checkout.object_id("si"),
                    "object": "subscription_item",
                    "created": now,
                    "current_period_end": now + MONTH_SECONDS,
                    "current_period_start": now,
                    "metadata": {},
                    "price": price,
                    "quantity": 1,
                    "subscription": subscription_id,
                }
            ],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/subscription_items?subscription={subscription_id}",
        },
        "latest_invoice": invoice_id,
        "livemode": False,
        "metadata": metadata,
        "start_date": now,
        "status": "active",
    }
    invoice = {
        "id": invoice_id,
        "object": "invoice",
        "amount_due": checkout.amount_cents,
        "amount_paid": checkout.amount_cents,
        "amount_remaining": 0,
        "attempt_count": 1,
        "billing_reason": "subscription_create",
        "collection_method": "charge_automatically",
        "created": now,
        "currency": checkout.currency,
        "customer": customer,
        "customer_email": checkout.email,
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": checkout.object_id("il"),
                    "object": "line_item",
                    "amount": checkout.amount_cents,
                    "currency": checkout.currency,
                    "description": f"1 × Nectar Studio {checkout.plan_name} (at {checkout.amount_cents / 100:.2f} / {checkout.interval})",
                    "period": {"start": now, "end": now + MONTH_SECONDS},
                    "pricing": {
                        "price_details": {"price": checkout.price_id, "product": price["product"]},
                        "type": "price_details",
                        "unit_amount_decimal": str(checkout.amount_cents),
                    },
                    "quantity": 1,
                }
            ],
            "has_more": False,
            "total_count": 1,
        },
        "livemode": False,
        "parent": {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": metadata, "subscription": subscription_id},
        },
        "period_end": now,
        "period_start": now,
        "status": "paid",
        "status_transitions": {"finalized_at": now, "paid_at": now},
        "total": checkout.amount_cents,
    }
    session = {
        "id": checkout.session_id,
        "object": "checkout.session",
        "amount_subtotal": checkout.amount_cents,
        "amount_total": checkout.amount_cents,
        "cancel_url": checkout.cancel_url,
        "client_reference_id": checkout.lead_id,
        "created": now,
        "currency": checkout.currency,
        "customer": customer,
        "customer_creation": "always",
        "customer_details": {"email": checkout.email, "name": None, "tax_exempt": "none"},
        "customer_email": checkout.email,
        "expires_at": now + SESSION_LIFETIME_SECONDS,
        "invoice": invoice_id,
        "livemode": False,
        "metadata": metadata,
        "mode": "subscription",
        "payment_status": "paid",
        "status": "complete",
        "subscription": subscription_id,
        "success_url": checkout.success_url,
        "url": None,
    }
    return [
        _event(checkout, "customer.subscription.created", subscription, now),
        _event(checkout, "invoice.paid", invoice, now),
        _event(checkout, "checkout.session.completed", session, now),
    ]


def deliver(events: list[dict], webhook_url: str, secret: str, timeout: float = 10.0) -> None:
    """POSTs each event, signed as Stripe signs, to the webhook endpoint; raises DeliveryFailed on
    the first one not accepted (a retry sends them all again; the endpoint stores each once)."""
    for event in events:
        payload = json.dumps(event).encode()
        try:
            response = requests.post(
                webhook_url,
                data=payload,
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks) nectar-test-checkout",
                    SIGNATURE_HEADER: signature_header(payload, secret),
                },
                timeout=timeout,
                allow_redirects=False,
            )
        except requests.RequestException as error:
            raise DeliveryFailed(f"{webhook_url} is unreachable ({type(error).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"{webhook_url} answered {response.status_code} to {event['type']}")


def _event(checkout: SandboxCheckout, kind: str, obj: dict, now: int) -> dict:
    return {
        "id": checkout.object_id("evt", kind),
        "object": "event",
        "api_version": API_VERSION,
        "created": now,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": kind,
    }
