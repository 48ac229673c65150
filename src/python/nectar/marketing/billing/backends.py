"""Where billing goes, chosen once at start from the configuration (`choose_backend`): Stripe, the
local test checkout that stands in for it without keys, or nowhere (production without keys).

Everything that differs between the three lives here: which price a plan sells at, where checkout
sends the visitor, the customer portal, re-reading a subscription, the test checkout page, and
reporting usage to a meter. The rest of billing (pricing page, webhooks, events, provisioning) is the
same code whichever backend runs.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

import stripe

from nectar.marketing.billing import sandbox, stripe_api
from nectar.marketing.billing.stripe_api import CheckoutRequest

if TYPE_CHECKING:
    from nectar.marketing.billing.config import BillingConfig
    from nectar.marketing.billing.plans import Plan
    from nectar.marketing.billing.usage import UsageToReport
    from nectar.marketing.links import Links


class BillingMode(StrEnum):
    STRIPE = "stripe"  # a secret key: real Stripe (test or live keys)
    TEST = "test"  # no key, not production: the local test checkout
    OFF = "off"  # no key in production: billing is unavailable


CHECKOUT_OFF = "Online checkout is unavailable right now. Contact us and we will set you up."


class BillingUnavailable(Exception):
    """Checkout (or the portal) cannot start; `str()` says why, for the person."""


class TestCheckoutOff(Exception):
    """The test checkout page was asked for, but this installation does not run it."""


class BillingBackend:
    """What every backend answers; the defaults are those of a backend without Stripe."""

    mode: BillingMode

    def __init__(self, config: BillingConfig):
        self.config = config

    @property
    def sells_online(self) -> bool:
        """Whether the pricing page offers checkout forms at all."""
        return True

    def price_id(self, plan_key: str) -> str | None:
        """The price a paid plan is sold at before staff overrides (STRIPE_PRICE_<PLAN>)."""
        return self.config.price_ids.get(plan_key)

    def checkout(self, request: CheckoutRequest, plan: Plan, links: Links) -> str:
        """Opens a checkout for `request`; returns the address to send the visitor to.
        Raises BillingUnavailable or StripeUnavailable."""
        raise NotImplementedError

    def portal(self, customer_id: str, return_url: str) -> str:
        """The customer portal's address for `customer_id`. Raises BillingUnavailable or StripeUnavailable."""
        raise BillingUnavailable(
            "The billing portal is Stripe's, and this installation runs the test checkout without Stripe "
            "keys: there are no cards or invoices to manage."
        )

    def current_subscription(self, subscription_id: str) -> dict | None:
        """The subscription as the payment provider has it now, or None when there is nothing more
        to ask than the event carried. Raises stripe.StripeError (the worker retries)."""
        return None

    def test_checkout(self, token: str) -> sandbox.SandboxCheckout:
        """The test checkout a page address carries. Raises TestCheckoutOff, or TokenInvalid."""
        raise TestCheckoutOff("The test checkout is off: this installation uses Stripe.")

    @property
    def reports_usage(self) -> bool:
        """Whether paid plans' usage is reported (usage.py): not where nothing is sold."""
        return True

    def report_usage(self, report: UsageToReport) -> str:
        """Reports one organization's usage of one UTC day to the payment provider's meter, safe to
        repeat (`report.identifier` names it). Returns how it was reported (the mode); raises
        MeterEventRefused when the provider refuses it for good, anything else to be retried."""
        return self.mode.value  # without Stripe, recording it (usage.py) is all there is to do


class StripeBilling(BillingBackend):
    """Stripe's hosted checkout and portal (test or live keys)."""

    mode = BillingMode.STRIPE

    def checkout(self, request: CheckoutRequest, plan: Plan, links: Links) -> str:
        return stripe_api.create_checkout_session(self.config, request)

    def portal(self, customer_id: str, return_url: str) -> str:
        return stripe_api.create_portal_session(self.config, customer_id, return_url)

    def report_usage(self, report: UsageToReport) -> str:
        stripe_api.create_meter_event(
            self.config,
            customer_id=report.stripe_customer_id,
            value=report.value,
            identifier=report.identifier,
            timestamp=report.timestamp,
        )
        return self.mode.value

    def current_subscription(self, subscription_id: str) -> dict | None:
        try:
            return stripe_api.retrieve_subscription(self.config, subscription_id)
        except stripe.InvalidRequestError as error:
            if error.code == "resource_missing":
                return None  # not in this account (or deleted since): the event's object is all there is
            raise


class TestCheckoutBilling(BillingBackend):
    """No keys outside production: a local page stands in for Stripe's checkout (see sandbox.py)."""

    mode = BillingMode.TEST

    def price_id(self, plan_key: str) -> str | None:
        return super().price_id(plan_key) or f"price_test_{plan_key}"

    def checkout(self, request: CheckoutRequest, plan: Plan, links: Links) -> str:
        secret = self.config.webhook_secret
        session_id = sandbox.session_id_for(secret, request.idempotency_key)
        checkout = sandbox.SandboxCheckout(
            session_id=session_id,
            email=request.email,
            plan=plan.key,
            plan_name=plan.name,
            organization_name=request.organization_name,
            lead_id=request.lead_id,
            price_id=request.price_id,
            amount_cents=plan.amount_cents,
            currency=plan.currency,
            interval=plan.interval,
            success_url=request.success_url.replace("{CHECKOUT_SESSION_ID}", session_id),
            cancel_url=request.cancel_url,
        )
        return links.test_checkout_path(sandbox.session_token(secret, checkout))

    def test_checkout(self, token: str) -> sandbox.SandboxCheckout:
        return sandbox.read_session(self.config.webhook_secret, token)


class BillingOff(BillingBackend):
    """No keys in production: nothing is sold online; the pricing page says to contact us."""

    mode = BillingMode.OFF

    @property
    def sells_online(self) -> bool:
        return False

    @property
    def reports_usage(self) -> bool:
        return False

    def checkout(self, request: CheckoutRequest, plan: Plan, links: Links) -> str:
        raise BillingUnavailable(CHECKOUT_OFF)


def choose_backend(config: BillingConfig) -> BillingBackend:
    """Stripe with a secret key; without one, the test checkout outside production, else off."""
    if config.secret_key:
        return StripeBilling(config)
    return BillingOff(config) if config.production else TestCheckoutBilling(config)
