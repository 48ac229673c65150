"""Absolute links marketing hands out (in emails, to Stripe, in the sitemap and the feed), from the
public address in settings, never the request's Host header, which a client controls.

`Links` needs no request, so the worker (campaigns, emails) and the views build the same addresses.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import urlencode

from flask import current_app, url_for

from nectar.marketing.billing.config import billing_config
from nectar.marketing.contract.campaigns import unsubscribe_url
from nectar.shared.tokens import make_token

# A newsletter confirmation link: a signed token naming the subscriber row and the address.
CONFIRM_PURPOSE = "newsletter-confirm"
CONFIRM_PATH = "/newsletter/confirm/"
# Billing's pages that Stripe (or the test checkout) sends the buyer back to; views route these paths.
CHECKOUT_SUCCESS_PATH = "/billing/success"
CHECKOUT_CANCEL_PATH = "/billing/cancel"
TEST_CHECKOUT_PATH = "/billing/test-checkout/"
# Where a customer asks for a billing-portal link (the welcome email points here).
PORTAL_PATH = "/billing/portal"
# Core's pages where customers sign in and sign up (core routes these paths).
CORE_SIGN_IN_PATH = "/login"
CORE_SIGN_UP_PATH = "/signup"


@dataclass(frozen=True)
class Links:
    """The key that signs personal links, and the site's public address."""

    secret_key: str
    base_url: str

    def confirm_url(self, subscriber_id: uuid.UUID, email: str) -> str:
        token = make_token(self.secret_key, CONFIRM_PURPOSE, {"s": str(subscriber_id), "e": email.lower()})
        return f"{self.base_url}{CONFIRM_PATH}{token}"

    def unsubscribe_url(self, email: str) -> str:
        return unsubscribe_url(self.base_url, self.secret_key, email)

    def checkout_success_url(self) -> str:
        """With Stripe's literal {CHECKOUT_SESSION_ID}, which Stripe fills in."""
        return f"{self.base_url}{CHECKOUT_SUCCESS_PATH}?session_id={{CHECKOUT_SESSION_ID}}"

    def checkout_cancel_url(self, plan: str) -> str:
        return f"{self.base_url}{CHECKOUT_CANCEL_PATH}?{urlencode({'plan': plan})}"

    def test_checkout_path(self, token: str) -> str:
        """A path, not an address: the visitor is on this site already, whatever host they used."""
        return f"{TEST_CHECKOUT_PATH}{token}"


def public_base_url() -> str:
    return current_app.config["NECTAR_SETTINGS"].public_url


def app_links() -> Links:
    """The links of the app handling the current request."""
    return Links(current_app.secret_key, public_base_url())


def pricing_url() -> str:
    return url_for("billing.pricing")


def core_sign_in_url() -> str:
    """Core's sign-in page, at core's public address (CORE_PUBLIC_URL)."""
    return billing_config().core_public_url + CORE_SIGN_IN_PATH


def core_sign_up_url() -> str:
    """Core's sign-up page, at core's public address (CORE_PUBLIC_URL)."""
    return billing_config().core_public_url + CORE_SIGN_UP_PATH
