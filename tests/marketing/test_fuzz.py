"""Bad input on every route of marketing (tests/fuzz.py), Stripe's webhook signed as Stripe signs:
no answer is a 5xx, nothing refused is stored, and no over-long value reaches the database."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from nectar.marketing.billing.config import BillingConfig
from nectar.marketing.contract.campaigns import unsubscribe_token
from tests.fuzz import Fuzz, Principal
from tests.marketing.billing_helpers import WEBHOOK_SECRET, billing_app, close_app
from tests.marketing.stripe_fake import new_id, sign


@pytest.fixture(scope="module")
def app(settings_for):
    # The test checkout (no Stripe key), and one trusted proxy hop: each fuzzed request brings its
    # own address, so no per-address throttle hides a view.
    app = billing_app(settings_for, BillingConfig(webhook_secret=WEBHOOK_SECRET), TRUSTED_PROXY_HOPS="1")
    yield app
    close_app(app)


def _event() -> dict:
    return {
        "id": new_id("evt"),
        "type": "customer.subscription.updated",
        "created": int(time.time()),
        "data": {"object": {"id": new_id("sub"), "object": "subscription"}},
    }


@pytest.fixture(scope="module")
def addresses(app, database):
    """A published post, a subscriber's links and a test checkout: every address a route can name."""
    slug = f"fuzz-{uuid.uuid4().hex[:8]}"
    with database.server.connect_as_superuser(database.name) as conn:
        conn.execute(
            "INSERT INTO blog_posts (slug, title, body_markdown, status, published_at) "
            "VALUES (%s, 'Fuzz', 'Text', 'published', now() - interval '1 minute')",
            (slug,),
        )
    visitor = Principal(app.test_client(), token_page="/contact")
    email = f"reader-{uuid.uuid4().hex[:8]}@example.com"
    visitor.client.post("/newsletter", data={"email": email, "csrf_token": visitor.csrf_token()})
    with database.server.connect_as_superuser(database.name) as conn:
        body = conn.execute(
            "SELECT body_text FROM email_outbox WHERE to_address = %s AND category = 'newsletter.confirm'",
            (email,),
        ).fetchone()[0]
    checkout = visitor.client.post(
        "/billing/checkout",
        data={
            "plan": "pro",
            "email": email,
            "organization_name": "Fuzz Org",
            "nonce": uuid.uuid4().hex,
            "csrf_token": visitor.csrf_token(),
        },
    )
    assert checkout.status_code == 303, checkout.get_data(as_text=True)
    return {
        "slug": slug,
        "newsletter.confirm_page": re.search(r"/newsletter/confirm/(\S+)", body).group(1),
        "newsletter.unsubscribe": unsubscribe_token(app.secret_key, email),
        "billing.sandbox_checkout": checkout.headers["Location"].rsplit("/", 1)[1],
    }


def test_bad_input_on_any_route_is_refused_without_a_5xx_and_nothing_is_stored(app, addresses, database):
    visitor = Principal(app.test_client(), token_page="/contact")
    stripe = Principal(app.test_client(), sign=lambda body: {"Stripe-Signature": sign(body, WEBHOOK_SECRET)})

    def value_for(rule, name):
        if name == "slug":
            return addresses["slug"]
        # Each kind of token for its own pages; the portal's is only ever emailed (an unknown one is refused).
        kind = rule.endpoint.replace("confirm_page", "confirm").replace("_page", "")
        by_kind = {
            "newsletter.confirm": addresses["newsletter.confirm_page"],
            "newsletter.unsubscribe": addresses["newsletter.unsubscribe"],
            "newsletter.resubscribe": addresses["newsletter.unsubscribe"],
            "billing.sandbox_checkout": addresses["billing.sandbox_checkout"],
        }
        return by_kind.get(kind, "not-a-token")

    fuzz = Fuzz(
        app,
        value_for=value_for,
        principal_for=lambda rule: stripe if rule.endpoint == "billing.stripe_webhook" else visitor,
        json_routes=lambda rule: rule.endpoint == "billing.stripe_webhook",
        json_fields=_event(),
    )
    fuzz.check(database)
