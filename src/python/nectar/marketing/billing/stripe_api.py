"""The calls billing makes to Stripe's API, through the official SDK (a StripeClient per key and
STRIPE_API_BASE, so nothing global is configured)."""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import stripe

if TYPE_CHECKING:
    from nectar.marketing.billing.config import BillingConfig

log = logging.getLogger(__name__)


class StripeUnavailable(Exception):
    """Stripe could not do it; `str()` is a sentence for the person waiting."""


@dataclass(frozen=True)
class CheckoutRequest:
    price_id: str
    email: str
    plan: str
    organization_name: str
    lead_id: str
    success_url: str
    cancel_url: str
    idempotency_key: str


def checkout_metadata(*, lead_id: str, plan: str, organization_name: str) -> dict[str, str]:
    """What a checkout (and its subscription) carries for events to find its lead, plan and name."""
    return {"lead_id": lead_id, "plan": plan, "organization_name": organization_name}


def stripe_client(config: BillingConfig) -> stripe.StripeClient:
    assert config.secret_key, "no STRIPE_SECRET_KEY: use the test checkout"
    return _stripe_client(config.secret_key, config.api_base)


@functools.lru_cache(maxsize=8)  # one client per key and address, so its HTTP connections are reused
def _stripe_client(secret_key: str, api_base: str) -> stripe.StripeClient:
    return stripe.StripeClient(secret_key, base_addresses={"api": api_base}, max_network_retries=2)


def create_checkout_session(config: BillingConfig, checkout: CheckoutRequest) -> str:
    """A Checkout Session in subscription mode; returns its url. The idempotency key makes a
    repeated request (a double click) return the first session instead of making a second."""
    metadata = checkout_metadata(
        lead_id=checkout.lead_id, plan=checkout.plan, organization_name=checkout.organization_name
    )
    params = {
        "mode": "subscription",
        "line_items": [{"price": checkout.price_id, "quantity": 1}],
        "customer_email": checkout.email,
        "client_reference_id": checkout.lead_id,
        "metadata": metadata,
        # Copied onto the subscription, so its own events say which plan and lead it belongs to.
        "subscription_data": {"metadata": metadata},
        "success_url": checkout.success_url,
        "cancel_url": checkout.cancel_url,
    }
    try:
        session = stripe_client(config).v1.checkout.sessions.create(
            params=params, options={"idempotency_key": checkout.idempotency_key}
        )
    except stripe.IdempotencyError:
        raise StripeUnavailable(
            "This form was already sent with different details. Reload the page and try again."
        ) from None
    except stripe.StripeError as error:
        raise _unavailable("create a checkout session", error) from None
    return session.url


def create_portal_session(config: BillingConfig, customer_id: str, return_url: str) -> str:
    """A customer-portal session for `customer_id`; returns its url."""
    try:
        session = stripe_client(config).v1.billing_portal.sessions.create(
            params={"customer": customer_id, "return_url": return_url}
        )
    except stripe.StripeError as error:
        raise _unavailable("open the billing portal", error) from None
    return session.url


def retrieve_subscription(config: BillingConfig, subscription_id: str) -> dict:
    """The subscription as Stripe has it now, as plain JSON (the shape events carry).
    Raises stripe.StripeError: the worker retries."""
    subscription = stripe_client(config).v1.subscriptions.retrieve(subscription_id)
    return json.loads(subscription.last_response.body)


class MeterEventRefused(Exception):
    """Stripe refused a meter event for good (a 4xx other than a rate limit): `str()` says why."""


def create_meter_event(
    config: BillingConfig, *, customer_id: str, value: int, identifier: str, timestamp: int
) -> None:
    """Records `value` on the meter STRIPE_METER_EVENT_NAME for `customer_id` at `timestamp`.
    Stripe keeps one event per `identifier`, and the same idempotency key replays the first answer,
    so a retry never bills twice. Raises MeterEventRefused, or stripe.StripeError for what a retry
    may cure (the network, Stripe's errors, a rate limit)."""
    params = {
        "event_name": config.meter_event_name,
        "payload": {"stripe_customer_id": customer_id, "value": str(value)},
        "identifier": identifier,
        "timestamp": timestamp,
    }
    try:
        stripe_client(config).v1.billing.meter_events.create(
            params=params, options={"idempotency_key": identifier}
        )
    except (stripe.InvalidRequestError, stripe.IdempotencyError, stripe.PermissionError) as refused:
        raise MeterEventRefused(refused.user_message or str(refused)) from None


def _unavailable(action: str, error: stripe.StripeError) -> StripeUnavailable:
    log.warning("stripe: could not %s: %s (%s)", action, type(error).__name__, error.user_message or error)
    if isinstance(error, stripe.APIConnectionError):
        return StripeUnavailable("Our payment provider could not be reached. Nothing was charged; try again.")
    return StripeUnavailable(
        "Our payment provider refused the request. Nothing was charged; please try again or contact us."
    )
