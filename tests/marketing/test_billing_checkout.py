"""Pricing, Stripe Checkout and the customer portal, with the official SDK talking to a local fake of
Stripe's API: what was sent, idempotency on a double click, and every refusal a visitor can meet."""

from __future__ import annotations

import re
import uuid

import pytest

from nectar.marketing.billing.config import BillingConfig
from nectar.shared.config import Role
from tests.marketing.billing_helpers import WEBHOOK_SECRET, billing_app, browser, close_app, free_port
from tests.marketing.stripe_fake import StripeFake, new_id

PUBLIC_URL = "https://nectar.example"
PRICE_IDS = {"starter": "price_1StarterMonthly", "pro": "price_1ProMonthly"}


@pytest.fixture(scope="module")
def fake():
    fake = StripeFake().start()
    fake.add_price(PRICE_IDS["starter"], 2900)
    fake.add_price(PRICE_IDS["pro"], 9900)
    yield fake
    fake.stop()


def stripe_config(fake, **overrides) -> BillingConfig:
    values = {
        "secret_key": fake.secret_key,
        "webhook_secret": WEBHOOK_SECRET,
        "price_ids": PRICE_IDS,
        "api_base": fake.url,
        "core_public_url": "https://app.nectar.example",
    }
    values.update(overrides)
    return BillingConfig(**values)


@pytest.fixture(scope="module")
def app(settings_for, fake):
    app = billing_app(settings_for, stripe_config(fake), MARKETING_PUBLIC_URL=PUBLIC_URL)
    yield app
    close_app(app)


@pytest.fixture
def visitor(app):
    return browser(app)


def email() -> str:
    return f"buyer-{uuid.uuid4().hex[:10]}@example.com"


def checkout_form(plan="pro", address=None, organization="Acme Robotics", nonce="nonce-from-one-page-view"):
    return {"plan": plan, "email": address or email(), "organization_name": organization, "nonce": nonce}


def nonces(page: str) -> list[str]:
    return re.findall(r'id="nonce" name="nonce" type="hidden" value="([^"]+)"', page)


def test_the_pricing_page_shows_each_plan_with_a_checkout_form(visitor):
    page = visitor.get("/pricing")
    html = page.get_data(as_text=True)

    assert page.status_code == 200
    for text in ("Free", "$0", "Starter", "$29", "Pro", "$99", "Subscribe to Pro", "Subscribe to Starter"):
        assert text in html
    assert html.count('action="/billing/checkout"') == 2
    assert 'href="https://app.nectar.example/signup"' in html
    assert "no card, no charge" not in html, "real Stripe: no test-checkout label"
    # Each form carries its own nonce, drawn for this page view.
    first, second = nonces(html), nonces(visitor.get("/pricing").get_data(as_text=True))
    assert len(first) == 2 and len(set(first + second)) == 4
    assert "cdn" not in html.lower()


def test_checkout_opens_a_subscription_session_linked_to_the_lead(visitor, fake, query):
    form = checkout_form(plan="pro", organization="Acme Robotics")
    before = len(fake.calls("POST", "/v1/checkout/sessions"))

    response = visitor.post("/billing/checkout", form)

    assert response.status_code == 303
    calls = fake.calls("POST", "/v1/checkout/sessions")
    assert len(calls) == before + 1
    sent = calls[-1]
    assert response.headers["Location"] == f"{fake.url}/c/pay/{fake_session_id(fake, sent)}"
    ((lead_id, source, company),) = query(
        "SELECT id, source, company FROM leads WHERE email = %s", form["email"]
    )
    assert (source, company) == ("pricing", "Acme Robotics")
    metadata = {"lead_id": str(lead_id), "plan": "pro", "organization_name": "Acme Robotics"}
    assert sent.params == {
        "mode": "subscription",
        "line_items": [{"price": PRICE_IDS["pro"], "quantity": "1"}],
        "customer_email": form["email"],
        "client_reference_id": str(lead_id),
        "metadata": metadata,
        "subscription_data": {"metadata": metadata},
        "success_url": f"{PUBLIC_URL}/billing/success?session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{PUBLIC_URL}/billing/cancel?plan=pro",
    }
    assert sent.headers["Authorization"] == f"Bearer {fake.secret_key}"
    assert sent.headers["Idempotency-Key"].startswith("checkout-")


def fake_session_id(fake, recorded) -> str:
    """The session the fake made for a recorded request (its answer is the session object)."""
    return next(
        obj["id"]
        for obj in fake.objects.values()
        if obj.get("object") == "checkout.session"
        and obj["customer_email"] == recorded.params["customer_email"]
    )


def test_a_double_click_opens_the_same_session_and_a_new_page_view_a_new_one(visitor, fake, query):
    form = checkout_form(plan="starter")

    first = visitor.post("/billing/checkout", form)
    second = visitor.post("/billing/checkout", form)

    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    mine = [
        c for c in fake.calls("POST", "/v1/checkout/sessions") if c.params["customer_email"] == form["email"]
    ]
    assert len(mine) == 2 and mine[0].headers["Idempotency-Key"] == mine[1].headers["Idempotency-Key"]
    sessions = [o for o in fake.objects.values() if o.get("customer_email") == form["email"]]
    assert len(sessions) == 1, "Stripe made one session, and so one customer at payment"
    assert len(query("SELECT 1 FROM leads WHERE email = %s", form["email"])) == 1

    again = visitor.post("/billing/checkout", dict(form, nonce="a-later-page-view"))
    assert again.headers["Location"] != first.headers["Location"]


@pytest.mark.parametrize(
    "change, field_error",
    [
        ({"email": ""}, "Enter your email address."),
        ({"email": "not-an-address"}, "Enter an email address like name@example.com."),
        ({"email": "renée@example.com"}, "accented or non-Latin letters before the @"),
        ({"organization_name": "A"}, "Use 2 to 200 characters."),
        ({"organization_name": ""}, "Name your organization"),
    ],
)
def test_bad_input_is_shown_next_to_the_field_and_nothing_is_sent(visitor, fake, query, change, field_error):
    before = len(fake.requests)
    form = dict(checkout_form(), **change)
    response = visitor.post("/billing/checkout", form)

    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert re.search(r'class="field has-error".*?' + re.escape(field_error), html, re.S)
    assert len(fake.requests) == before
    if form["email"]:
        assert query("SELECT 1 FROM leads WHERE email = %s", form["email"]) == []


@pytest.mark.parametrize("plan", ["free", "platinum"])
def test_a_plan_that_is_not_for_sale_is_refused(visitor, fake, plan):
    before = len(fake.requests)
    response = visitor.post("/billing/checkout", checkout_form(plan=plan))
    assert response.status_code == 400
    assert "Choose one of the paid plans" in response.get_data(as_text=True)
    assert len(fake.requests) == before


def test_without_a_csrf_token_the_form_is_refused(app, fake):
    before = len(fake.requests)
    response = app.test_client().post("/billing/checkout", data=checkout_form())
    assert response.status_code == 400 and len(fake.requests) == before
    assert "The CSRF token is missing." in response.get_data(as_text=True)


def test_stripe_refusing_or_unreachable_gives_a_clear_message_and_keeps_the_lead(settings_for, fake, query):
    unknown_price = stripe_config(
        fake, price_ids={"starter": "price_deleted_in_stripe", "pro": PRICE_IDS["pro"]}
    )
    unreachable = stripe_config(fake, api_base=f"http://127.0.0.1:{free_port()}")
    for config, message in (
        (unknown_price, "Our payment provider refused the request. Nothing was charged"),
        (unreachable, "Our payment provider could not be reached. Nothing was charged"),
    ):
        app = billing_app(settings_for, config)
        try:
            form = checkout_form(plan="starter")
            response = browser(app).post("/billing/checkout", form)
            assert response.status_code == 503
            assert message in response.get_data(as_text=True)
            # The form is shown again with what was typed.
            assert f'value="{form["email"]}"' in response.get_data(as_text=True)
            assert len(query("SELECT 1 FROM leads WHERE email = %s", form["email"])) == 1
        finally:
            close_app(app)


def test_a_plan_without_a_stripe_price_is_not_sold_online(settings_for, fake):
    app = billing_app(settings_for, stripe_config(fake, price_ids={"pro": PRICE_IDS["pro"]}))
    try:
        visitor = browser(app)
        html = visitor.get("/pricing").get_data(as_text=True)
        assert html.count('action="/billing/checkout"') == 1 and "Contact us" in html
        response = visitor.post("/billing/checkout", checkout_form(plan="starter"))
        assert response.status_code == 503 and "cannot be bought online yet" in response.get_data(
            as_text=True
        )
    finally:
        close_app(app)


def test_the_price_can_be_overridden_by_staff_in_system_settings(app, fake, database):
    with database.connect(Role.ADMIN) as conn:
        conn.execute(
            "INSERT INTO system_settings (key, value) VALUES ('billing_plans', %s::jsonb)",
            ('{"pro": {"price_id": "price_1ProYearly", "amount_cents": 12900}}',),
        )
    fake.add_price("price_1ProYearly", 12900)
    try:
        visitor = browser(app)
        assert "$129" in visitor.get("/pricing").get_data(as_text=True)
        form = checkout_form(plan="pro")
        assert visitor.post("/billing/checkout", form).status_code == 303
        assert (
            fake.calls("POST", "/v1/checkout/sessions")[-1].params["line_items"][0]["price"]
            == "price_1ProYearly"
        )
    finally:
        with database.connect(Role.ADMIN) as conn:
            conn.execute("DELETE FROM system_settings WHERE key = 'billing_plans'")


def test_too_many_checkouts_for_one_address_are_slowed_down(visitor, fake):
    address = email()
    for attempt in range(10):
        form = checkout_form(address=address, nonce=f"view-{attempt}")
        assert visitor.post("/billing/checkout", form).status_code == 303
    before = len(fake.requests)
    response = visitor.post("/billing/checkout", checkout_form(address=address, nonce="view-11"))
    assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
    assert "several requests for this email address" in response.get_data(as_text=True)
    assert len(fake.requests) == before


def test_success_page_follows_the_checkout_until_the_organization_is_ready(visitor, database):
    session_id = new_id("cs_test")
    waiting = visitor.get(f"/billing/success?session_id={session_id}")
    assert waiting.status_code == 200
    assert 'http-equiv="refresh"' in waiting.get_data(as_text=True)

    with database.connect(Role.ADMIN) as conn:
        conn.execute(
            "INSERT INTO subscriptions (stripe_subscription_id, stripe_customer_id, plan, status, "
            "checkout_session_id, customer_email, organization_name, provisioning_status) "
            "VALUES (%s, %s, 'pro', 'active', %s, 'jane@example.com', 'Jane & Co', 'provisioned')",
            (new_id("sub"), new_id("cus"), session_id),
        )
    ready = visitor.get(f"/billing/success?session_id={session_id}").get_data(as_text=True)
    assert "Your organization is ready" in ready and "Jane &amp; Co" in ready and "Pro plan" in ready
    assert "j•••@example.com" in ready and "jane@example.com" not in ready
    assert "set your password" in ready and 'href="https://app.nectar.example/login"' in ready
    assert 'http-equiv="refresh"' not in ready


def test_success_page_explains_a_refused_provisioning_in_its_own_words(visitor, database):
    session_id = new_id("cs_test")
    with database.connect(Role.ADMIN) as conn:
        conn.execute(
            "INSERT INTO subscriptions (stripe_subscription_id, stripe_customer_id, plan, status, "
            "checkout_session_id, customer_email, provisioning_status, provisioning_error) "
            "VALUES (%s, %s, 'pro', 'active', %s, 'x@example.com', 'refused', 'core refused (422): bad name')",
            (new_id("sub"), new_id("cus"), session_id),
        )
    page = visitor.get(f"/billing/success?session_id={session_id}").get_data(as_text=True)
    assert "could not set up your organization automatically" in page and "our team sees this" in page
    assert "bad name" not in page and "422" not in page  # core's words are for staff (provisioning_error)


@pytest.mark.parametrize(
    "error", [None, "core answered 401 (A valid service credential is required.); retrying"]
)
def test_success_page_shows_a_retried_provisioning_as_in_progress(visitor, database, error):
    session_id = new_id("cs_test")
    with database.connect(Role.ADMIN) as conn:
        conn.execute(
            "INSERT INTO subscriptions (stripe_subscription_id, stripe_customer_id, plan, status, "
            "checkout_session_id, customer_email, provisioning_status, provisioning_error) "
            "VALUES (%s, %s, 'pro', 'active', %s, 'x@example.com', 'pending', %s)",
            (new_id("sub"), new_id("cus"), session_id, error),
        )
    page = visitor.get(f"/billing/success?session_id={session_id}").get_data(as_text=True)
    assert "setting things up" in page and "credential" not in page and "401" not in page


def test_success_without_a_checkout_id_is_not_found(visitor):
    assert visitor.get("/billing/success").status_code == 404
    assert visitor.get("/billing/success?session_id=<script>").status_code == 404


def test_cancel_page_says_nothing_was_charged(visitor):
    page = visitor.get("/billing/cancel?plan=pro")
    assert page.status_code == 200 and "Nothing was charged for Pro" in page.get_data(as_text=True)


class TestPortal:
    def customer(self, fake, database, address: str) -> str:
        customer = fake.put({"id": new_id("cus"), "object": "customer", "email": address})["id"]
        with database.connect(Role.ADMIN) as conn:
            conn.execute(
                "INSERT INTO subscriptions (stripe_subscription_id, stripe_customer_id, plan, status, customer_email) "
                "VALUES (%s, %s, 'pro', 'active', %s)",
                (new_id("sub"), customer, address),
            )
        return customer

    def portal_email(self, database, address: str) -> list:
        with database.connect(Role.ADMIN) as conn:
            return conn.execute(
                "SELECT body_text FROM email_outbox WHERE lower(to_address) = lower(%s) "
                "AND category = 'billing.portal_link'",
                (address,),
            ).fetchall()

    def test_a_customer_gets_a_link_by_email_that_opens_the_portal_on_a_post(self, visitor, fake, database):
        address = email()
        customer = self.customer(fake, database, address)

        # Typed in capitals: the address on file still matches.
        sent = visitor.post("/billing/portal", {"email": address.upper()})
        assert sent.status_code == 200 and "Check your email" in sent.get_data(as_text=True)
        assert fake.calls("POST", "/v1/billing_portal/sessions") == [] or all(
            c.params["customer"] != customer for c in fake.calls("POST", "/v1/billing_portal/sessions")
        )
        ((body,),) = self.portal_email(database, address.upper())
        link = re.search(rf"{re.escape(PUBLIC_URL)}(/billing/portal/\S+)", body).group(1)

        # Following the link (as a mail scanner would) opens nothing.
        landing = visitor.get(link)
        assert landing.status_code == 200 and "Open the billing portal" in landing.get_data(as_text=True)
        assert not [
            c for c in fake.calls("POST", "/v1/billing_portal/sessions") if c.params["customer"] == customer
        ]

        opened = visitor.post(link)
        assert opened.status_code == 303
        (call,) = (
            c for c in fake.calls("POST", "/v1/billing_portal/sessions") if c.params["customer"] == customer
        )
        assert call.params == {"customer": customer, "return_url": f"{PUBLIC_URL}/pricing"}
        assert opened.headers["Location"].startswith(f"{fake.url}/p/session/bps_")

    def test_an_unknown_address_is_told_the_same_and_gets_nothing(self, visitor, database):
        address = email()
        sent = visitor.post("/billing/portal", {"email": address})
        assert sent.status_code == 200 and "Check your email" in sent.get_data(as_text=True)
        assert self.portal_email(database, address) == []

    def test_a_forged_link_is_refused(self, visitor, fake):
        before = len(fake.requests)
        response = visitor.post("/billing/portal/not-a-real-token")
        assert response.status_code == 400 and "not valid" in response.get_data(as_text=True)
        assert len(fake.requests) == before

    def test_bad_input_and_too_many_requests(self, visitor, fake, database):
        bad = visitor.post("/billing/portal", {"email": "nope"})
        assert bad.status_code == 422 and "name@example.com" in bad.get_data(as_text=True)
        address = email()
        self.customer(fake, database, address)
        for _ in range(3):
            assert visitor.post("/billing/portal", {"email": address}).status_code == 200
        limited = visitor.post("/billing/portal", {"email": address})
        assert limited.status_code == 429 and limited.headers["Retry-After"]
        assert len(self.portal_email(database, address)) == 3


def test_in_production_without_keys_billing_is_unavailable(settings_for, query):
    app = billing_app(settings_for, BillingConfig(production=True))
    try:
        visitor = browser(app)
        html = visitor.get("/pricing").get_data(as_text=True)
        assert "Online checkout is unavailable right now" in html
        assert 'action="/billing/checkout"' not in html and "no card, no charge" not in html
        form = checkout_form()
        response = visitor.post("/billing/checkout", form)
        assert response.status_code == 503
        assert "Online checkout is unavailable" in response.get_data(as_text=True)
        assert query("SELECT 1 FROM leads WHERE email = %s", form["email"]) == []
    finally:
        close_app(app)
